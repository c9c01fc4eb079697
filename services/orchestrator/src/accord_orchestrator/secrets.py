"""Webhook secrets at rest: AES-256-GCM under the orchestrator's webhook key, with the
webhook's id as associated data, so a ciphertext copied onto another webhook does not
decrypt. A signature needs the secret itself, so it cannot be stored as a hash."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the webhook key must be 32 bytes")
        self._aead = AESGCM(key)

    @staticmethod
    def from_setting(value: str) -> SecretBox:
        """A key given as base64 (standard or URL-safe) of 32 bytes."""
        try:
            key = base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_") + "==")
        except (binascii.Error, ValueError) as exc:
            raise ValueError("the webhook key is not base64") from exc
        return SecretBox(key)

    def seal(self, secret: str, webhook_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), webhook_id.encode())

    def open(self, sealed: bytes, webhook_id: str) -> str:
        nonce, box = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        return self._aead.decrypt(nonce, box, webhook_id.encode()).decode()
