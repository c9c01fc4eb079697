"""Checkpoints: the canonical text of (log id, tree size, root hash, time) and its signature.

The text, in the spirit of transparency-dev checkpoints ("signed notes"), is four lines, each
ending in a newline:

    <log id>
    <tree size, decimal>
    <root hash, standard base64>
    <checkpoint time, decimal microseconds since the Unix epoch>

and the signature is Ed25519 over exactly those bytes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Checkpoint:
    log_id: str
    tree_size: int
    root_hash: bytes
    time: datetime
    note: bytes
    signature: bytes
    key_id: str


def note(log_id: str, tree_size: int, root_hash: bytes, time: datetime) -> bytes:
    micros = (time - _EPOCH) // _MICROSECOND
    root = base64.b64encode(root_hash).decode()
    return f"{log_id}\n{tree_size}\n{root}\n{micros}\n".encode()


def sign(
    log_id: str,
    tree_size: int,
    root_hash: bytes,
    time: datetime,
    key_id: str,
    key: Ed25519PrivateKey,
) -> Checkpoint:
    text = note(log_id, tree_size, root_hash, time)
    return Checkpoint(log_id, tree_size, root_hash, time, text, key.sign(text), key_id)


def verify(cp: Checkpoint, public_key: bytes) -> bool:
    """The checkpoint's note names its size and root, and `public_key` signed the note."""
    lines = cp.note.split(b"\n")
    if (
        len(lines) != 5
        or lines[1:3] != note("", cp.tree_size, cp.root_hash, cp.time).split(b"\n")[1:3]
    ):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(cp.signature, cp.note)
    except (InvalidSignature, ValueError):
        return False
    return True
