"""The offline verifier of an audit export (`accord audit verify`): it trusts neither the server
nor its database, only the public key it is given, and shares no code with the service.

It checks, and names each failure exactly: the checkpoint's Ed25519 signature and that its
signed note says what its fields say; every record's payload digest (unless retention erased
the payload), its chained hash and its RFC 9162 inclusion proof against the checkpoint's root;
that the records are consecutive and chained; and, given an earlier checkpoint, the export's
RFC 9162 consistency proof from it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf import json_format

from accord.audit.v2 import audit_service_pb2 as pb
from accord.audit.v2 import record_pb2

ZERO = bytes(32)


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclass
class Report:
    """What a verification found: failures (empty when everything holds) and what it covered."""

    failures: list[str] = field(default_factory=list)
    checked: int = 0
    erased: list[int] = field(default_factory=list)
    checkpoint: record_pb2.Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def read_export(path: Path) -> list[pb.ExportRecordsResponse]:
    """The messages of an export file: one ExportRecordsResponse in proto JSON per line."""
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                items.append(json_format.Parse(line, pb.ExportRecordsResponse()))
            except json_format.ParseError as exc:
                raise ValueError(f"{path}:{number}: not an export line: {exc}") from None
    return items


def read_checkpoint(path: Path) -> record_pb2.Checkpoint:
    """A checkpoint saved as proto JSON (`accord audit checkpoint --json`)."""
    data = json.loads(path.read_text())
    return json_format.ParseDict(data.get("checkpoint", data), record_pb2.Checkpoint())


def read_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Public keys by id, from `accord audit keys --json` output or one `KEY_ID:BASE64` line."""
    text = path.read_text().strip()
    raw: dict[str, bytes] = {}
    if text.startswith("{"):
        listed = json_format.Parse(text, pb.GetCheckpointKeysResponse())
        raw = {k.key_id: k.public_key for k in listed.keys}
    else:
        key_id, _, encoded = text.rpartition(":")
        try:
            raw = {key_id: base64.b64decode(encoded, validate=True)}
        except binascii.Error:
            raise ValueError(f"{path}: not a key list nor KEY_ID:BASE64") from None
    try:
        return {k: Ed25519PublicKey.from_public_bytes(v) for k, v in raw.items()}
    except ValueError:
        raise ValueError(f"{path}: a key is not a 32-byte Ed25519 public key") from None


def check_checkpoint(
    cp: record_pb2.Checkpoint, keys: dict[str, Ed25519PublicKey], what: str = "checkpoint"
) -> list[str]:
    """The signature, then that the signed note says what the fields say."""
    key = keys.get(cp.key_id)
    if key is None:
        return [f"{what} is signed by key {cp.key_id!r}, which is not among the given keys"]
    try:
        key.verify(cp.signature, cp.note)
    except InvalidSignature:
        return [f"{what} signature does not verify with key {cp.key_id!r}"]
    lines = cp.note.decode(errors="replace").split("\n")
    if len(lines) != 5 or lines[4]:
        return [f"{what} note is not four lines"]
    micros = cp.checkpoint_time.seconds * 1_000_000 + cp.checkpoint_time.nanos // 1000
    expected = [cp.log_id, str(cp.tree_size), base64.b64encode(cp.root_hash).decode(), str(micros)]
    names = ["log id", "tree size", "root hash", "time"]
    return [
        f"{what} {name} differs from its signed note"
        for name, got, want in zip(names, lines, expected, strict=False)
        if got != want
    ]


def _inclusion(leaf: bytes, index: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, _h(b"\x00" + leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _h(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def _consistency(m: int, n: int, old: bytes, new: bytes, path: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if m == n:
        return not path and old == new
    if m < 1 or m > n or not path:
        return False
    if m & (m - 1) == 0:
        path = [old, *path]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = _h(b"\x01" + c + fr), _h(b"\x01" + c + sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = _h(b"\x01" + sr + c)
        fn, sn = fn >> 1, sn >> 1
    return fr == old and sr == new and sn == 0


def _prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def payload_digest(r: record_pb2.AuditRecord) -> bytes:
    texts = (r.event_id, r.event_type, r.tenant_id, r.aggregate_type, r.aggregate_id)
    micros = r.event_time.seconds * 1_000_000 + r.event_time.nanos // 1000
    body = b"".join(_prefixed(t.encode()) for t in texts)
    return _h(body + micros.to_bytes(8, "big", signed=True) + _prefixed(r.envelope))


def _check_record(
    r: record_pb2.AuditRecord, proof: list[bytes], cp: record_pb2.Checkpoint, report: Report
) -> None:
    at = f"record {r.index}"
    if r.HasField("erase_time"):
        report.erased.append(r.index)
    elif payload_digest(r) != r.payload_digest:
        report.failures.append(f"{at}: payload does not match payload_digest")
    if _h(r.prev_hash + r.index.to_bytes(8, "big") + r.payload_digest) != r.hash:
        report.failures.append(f"{at}: hash does not match prev_hash and payload_digest")
    if not _inclusion(r.hash, r.index, cp.tree_size, proof, cp.root_hash):
        report.failures.append(f"{at}: inclusion proof does not lead to the checkpoint's root")
    if not cp.log_id.endswith(f"/tenant/{r.tenant_id}"):
        report.failures.append(f"{at}: belongs to tenant {r.tenant_id!r}, not to {cp.log_id}")


def verify(
    items: list[pb.ExportRecordsResponse],
    keys: dict[str, Ed25519PublicKey],
    since: record_pb2.Checkpoint | None = None,
) -> Report:
    report = Report()
    if not items or items[0].WhichOneof("item") != "checkpoint":
        report.failures.append("the export does not start with a checkpoint")
        return report
    cp = report.checkpoint = items[0].checkpoint
    report.failures += check_checkpoint(cp, keys)
    consistency = [i.consistency for i in items if i.WhichOneof("item") == "consistency"]
    previous: record_pb2.AuditRecord | None = None
    for item in items[1:]:
        if item.WhichOneof("item") != "record":
            continue
        r = item.record.record
        report.checked += 1
        if previous is None and r.index == 0 and r.prev_hash != ZERO:
            report.failures.append("record 0: prev_hash is not 32 zero bytes")
        if previous is not None:
            if r.index != previous.index + 1:
                report.failures.append(
                    f"record {r.index} follows record {previous.index}: "
                    "records are missing or out of order"
                )
            elif r.prev_hash != previous.hash:
                report.failures.append(
                    f"record {r.index}: prev_hash is not the hash of record {previous.index}"
                )
        _check_record(r, list(item.record.inclusion_proof), cp, report)
        previous = r
    if since is not None:
        report.failures += _check_since(since, cp, consistency, keys)
    return report


def _check_since(
    old: record_pb2.Checkpoint,
    cp: record_pb2.Checkpoint,
    proofs: list[pb.GetConsistencyProofResponse],
    keys: dict[str, Ed25519PublicKey],
) -> list[str]:
    failures = check_checkpoint(old, keys, "the earlier checkpoint")
    if old.log_id != cp.log_id:
        return [*failures, f"the earlier checkpoint is of {old.log_id}, not of {cp.log_id}"]
    if old.tree_size > cp.tree_size:
        return [
            *failures,
            f"the checkpoint of size {cp.tree_size} does not extend the earlier one of size "
            f"{old.tree_size}: it is smaller",
        ]
    proof = next((p for p in proofs if p.from_size == old.tree_size), None)
    if old.tree_size == cp.tree_size:
        ok = old.root_hash == cp.root_hash
    elif proof is None:
        return [
            *failures,
            f"the export has no consistency proof from size {old.tree_size}; "
            "export it with --since",
        ]
    else:
        hashes = list(proof.hashes)
        ok = _consistency(old.tree_size, cp.tree_size, old.root_hash, cp.root_hash, hashes)
    if not ok:
        failures.append(
            f"the checkpoint of size {cp.tree_size} does not extend the earlier one of size "
            f"{old.tree_size}: the consistency proof fails"
        )
    return failures
