"""What the log holds: events taken from their envelopes, and the records that chain them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from accord.events.v1 import envelope_pb2


class MalformedEvent(ValueError):
    """A message that is not a usable EventEnvelope; it is dropped, never retried."""


@dataclass(frozen=True)
class Event:
    """The envelope's indexed fields, plus the envelope bytes exactly as received."""

    event_id: str
    event_type: str
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    # UTC, at microsecond precision: what Postgres stores is what the chain hashes.
    event_time: datetime
    envelope: bytes


@dataclass(frozen=True)
class TenantLink:
    """A record's place in its tenant's own log (see chain.tenant_link)."""

    index: int
    payload_digest: bytes
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True)
class Record:
    """One entry of the log: an event at its index, chained to the entry before it.

    Every record is in two chains: the log of all tenants (`index`, `prev_hash`, `hash`) and
    its tenant's own log (`tenant`). `erase_time` is set once retention erased the payload.
    """

    index: int
    event: Event
    append_time: datetime
    prev_hash: bytes
    hash: bytes
    tenant: TenantLink | None = None
    erase_time: datetime | None = None

    @property
    def link(self) -> TenantLink:
        if self.tenant is None:
            raise ValueError(f"record {self.index} has no tenant log link")
        return self.tenant


def parse_event(data: bytes) -> Event:
    """Read an envelope; raise MalformedEvent when it cannot identify its event."""
    try:
        envelope = envelope_pb2.EventEnvelope.FromString(data)
        # ToDatetime keeps microseconds (drops sub-microsecond nanos) and raises on
        # timestamps outside datetime's range.
        event_time = envelope.event_time.ToDatetime(tzinfo=UTC)
    except (DecodeError, ValueError, OverflowError) as exc:
        raise MalformedEvent(f"not an EventEnvelope: {exc}") from None
    if not envelope.event_id or not envelope.event_type:
        raise MalformedEvent("envelope lacks event_id or event_type")
    texts = (
        envelope.event_id,
        envelope.event_type,
        envelope.tenant_id,
        envelope.aggregate_type,
        envelope.aggregate_id,
    )
    if any("\x00" in t for t in texts):
        # Postgres text cannot hold NUL; such a row would fail its batch on every retry.
        raise MalformedEvent("envelope has a NUL character in an indexed field")
    return Event(
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        tenant_id=envelope.tenant_id,
        aggregate_type=envelope.aggregate_type,
        aggregate_id=envelope.aggregate_id,
        event_time=event_time,
        envelope=data,
    )
