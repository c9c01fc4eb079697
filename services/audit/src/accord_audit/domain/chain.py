"""The hash chain: each record's canonical bytes and `hash = SHA-256(prev_hash || canonical)`.

canonical(record) is the concatenation, in this order, of:

    index           8 bytes, unsigned big-endian
    event_id        length-prefixed UTF-8
    event_type      length-prefixed UTF-8
    tenant_id       length-prefixed UTF-8
    aggregate_type  length-prefixed UTF-8
    aggregate_id    length-prefixed UTF-8
    event_time      8 bytes, signed big-endian microseconds since 1970-01-01T00:00:00Z
    envelope        length-prefixed bytes (the serialized EventEnvelope as received)

where "length-prefixed" is a 4-byte unsigned big-endian byte count followed by the bytes.
The prefixes make the encoding unambiguous: no two different records share canonical bytes.
The first record's prev_hash is 32 zero bytes.

Each tenant's own log chains the same records differently, so that erasing a payload keeps
the chain checkable: `payload_digest = SHA-256(body)`, where body is canonical without the
index, and `hash = SHA-256(prev_hash || index || payload_digest)` with the tenant-log index.
A record whose payload was erased is checked in the log of all tenants by its link only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from accord_audit.domain.records import Event, Record, TenantLink

GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def body(event: Event) -> bytes:
    """The record's canonical bytes after its index (see the module docstring)."""
    e = event
    return body_of(
        e.event_id,
        e.event_type,
        e.tenant_id,
        e.aggregate_type,
        e.aggregate_id,
        e.event_time,
        e.envelope,
    )


def body_of(
    event_id: str,
    event_type: str,
    tenant_id: str,
    aggregate_type: str,
    aggregate_id: str,
    event_time: datetime,
    envelope: bytes,
) -> bytes:
    """body() from the fields themselves: what a verifier reading rows computes."""
    since = event_time - _EPOCH
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    parts = []
    for text in (event_id, event_type, tenant_id, aggregate_type, aggregate_id):
        data = text.encode()
        parts.append(len(data).to_bytes(4, "big"))
        parts.append(data)
    parts.append(micros.to_bytes(8, "big", signed=True))
    parts.append(len(envelope).to_bytes(4, "big"))
    parts.append(envelope)
    return b"".join(parts)


def canonical(index: int, event: Event) -> bytes:
    """The deterministic bytes of a record that its hash covers (see the module docstring)."""
    return index.to_bytes(8, "big") + body(event)


def payload_digest(event: Event) -> bytes:
    return hashlib.sha256(body(event)).digest()


def tenant_hash(prev_hash: bytes, index: int, digest: bytes) -> bytes:
    """A record's hash in its tenant's log, from the one before and its payload digest."""
    return hashlib.sha256(prev_hash + index.to_bytes(8, "big") + digest).digest()


def tenant_links(
    heads: dict[str, tuple[int, bytes]], records: list[Record]
) -> tuple[list[Record], dict[str, tuple[int, bytes]]]:
    """`records` linked into their tenants' logs after `heads` (tenant -> size, head hash);
    also the new heads of the tenants they touched."""
    heads = dict(heads)
    linked: list[Record] = []
    for r in records:
        size, prev = heads.get(r.event.tenant_id, (0, GENESIS))
        digest = payload_digest(r.event)
        entry = TenantLink(size, digest, prev, tenant_hash(prev, size, digest))
        heads[r.event.tenant_id] = (size + 1, entry.hash)
        linked.append(replace(r, tenant=entry))
    return linked, heads


def link(prev_hash: bytes, index: int, event: Event) -> bytes:
    """The hash of `event` stored at `index` after a record whose hash is `prev_hash`."""
    return hashlib.sha256(prev_hash + canonical(index, event)).digest()


def extend(
    head_index: int, head_hash: bytes, events: Iterable[Event], now: datetime
) -> list[Record]:
    """Records for `events` appended after the record at `head_index` (-1: empty log)."""
    records: list[Record] = []
    prev = head_hash
    for offset, event in enumerate(events, start=1):
        index = head_index + offset
        digest = link(prev, index, event)
        records.append(Record(index, event, now, prev, digest))
        prev = digest
    return records


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a range: the first invalid index (None when valid)."""

    first_invalid: int | None
    checked: int

    @property
    def valid(self) -> bool:
        return self.first_invalid is None


class Verifier:
    """Recomputes the chain over consecutive records fed in index order, chunk by chunk.

    It starts from the index to check first and the hash the chain has before it (GENESIS
    at index 0, else the stored hash of the record before). The first record whose index,
    prev_hash or hash disagrees is the first invalid one; a missing index is invalid too.
    """

    def __init__(self, start_index: int, prev_hash: bytes) -> None:
        self.next_index = start_index
        self.prev_hash = prev_hash
        self.checked = 0
        self.first_invalid: int | None = None

    def feed(self, records: Iterable[Record]) -> bool:
        """Check the next records; False once an invalid one is found (stop feeding)."""
        for r in records:
            if r.index != self.next_index:  # a record is missing
                self.first_invalid = self.next_index
                return False
            self.checked += 1
            # An erased record cannot be recomputed; its link to the one before still counts.
            recomputed = r.hash if r.erase_time else link(self.prev_hash, r.index, r.event)
            if r.prev_hash != self.prev_hash or r.hash != recomputed:
                self.first_invalid = r.index
                return False
            self.next_index += 1
            self.prev_hash = r.hash
        return True

    def finish(self, end_index: int) -> Verification:
        """The outcome; records missing before `end_index` (deleted rows) are invalid."""
        if self.first_invalid is None and self.next_index < end_index:
            self.first_invalid = self.next_index
        return Verification(self.first_invalid, self.checked)
