"""The checkpoint signing key: an Ed25519 JWK file re-read when it changes, so the key rotates
the way token keys do (write the new key file; checkpoints it signed name its id, and every key
that ever signed stays listed by GetCheckpointKeys). Without a file, a key made at start.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import OKPAlgorithm

from accord_kit import tokens

log = structlog.get_logger("accord.audit.signer")


def _load(path: Path) -> tuple[str, Ed25519PrivateKey]:
    return _from_jwk(tokens.read_private_key(path))


def _from_jwk(jwk: dict[str, object]) -> tuple[str, Ed25519PrivateKey]:
    key = OKPAlgorithm.from_jwk(jwk)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("a checkpoint key must be an Ed25519 private key")
    return str(jwk["kid"]), key


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class Signer:
    """The current signing key and its id."""

    RELOAD_SECONDS = 5.0

    def __init__(self, path: Path | None) -> None:
        self._file = tokens.WatchedFile(path, _load) if path else None
        if self._file is None:
            log.warning(
                "audit.ephemeral_checkpoint_key", hint="set ACCORD_AUDIT_CHECKPOINT_KEY_FILE"
            )
            self._fixed = _from_jwk(tokens.generate_key())

    def current(self) -> tuple[str, Ed25519PrivateKey]:
        return self._file.get(self.RELOAD_SECONDS) if self._file else self._fixed
