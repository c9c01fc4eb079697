"""Building event envelopes and naming their subjects and streams.

Subjects are `accord.<producer>.v1.<aggregate>.<event>`; each producer has one JetStream
stream, `ACCORD_<PRODUCER>`, holding `accord.<producer>.v1.>`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf import any_pb2
from google.protobuf.message import Message

from accord.events.v1 import envelope_pb2
from accord_kit import caller, tracing


def subject(producer: str, aggregate: str, event: str) -> str:
    return f"accord.{producer}.v1.{aggregate}.{event}"


def stream_name(producer: str) -> str:
    return f"ACCORD_{producer.upper()}"


def stream_subjects(producer: str) -> list[str]:
    return [f"accord.{producer}.v1.>"]


def envelope(
    *,
    producer: str,
    aggregate: str,
    event: str,
    aggregate_id: str,
    tenant_id: str,
    payload: Message,
    event_time: datetime | None = None,
    traceparent: str | None = None,
) -> envelope_pb2.EventEnvelope:
    """An envelope for `payload`; its trace context is `traceparent` when given, else the
    current span's (none while tracing is off)."""
    packed = any_pb2.Any()
    packed.Pack(payload)
    result = envelope_pb2.EventEnvelope(
        event_id=str(uuid.uuid4()),
        event_type=subject(producer, aggregate, event),
        tenant_id=tenant_id,
        producer=producer,
        aggregate_type=aggregate,
        aggregate_id=aggregate_id,
        payload=packed,
    )
    result.event_time.FromDatetime(event_time or datetime.now(UTC))
    if parent := tracing.traceparent() if traceparent is None else traceparent:
        result.trace.traceparent = parent
    if (principal := caller.current()) is not None:
        result.actor = principal.actor
    return result
