"""The pure hash chain: canonical bytes, linking and verification."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from accord.events.v1 import envelope_pb2
from accord_audit.domain import chain
from accord_audit.domain.records import Event, MalformedEvent, parse_event

T = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def event(event_id: str = "e1", **fields: str) -> Event:
    base = {"event_type": "accord.x.v1.job.queued", "tenant_id": "acme"}
    base |= {"aggregate_type": "job", "aggregate_id": "j1"} | fields
    return Event(event_id=event_id, event_time=T, envelope=b"env-" + event_id.encode(), **base)


def test_canonical_is_length_prefixed_and_documented() -> None:
    e = event()
    expected = (
        (0).to_bytes(8, "big")
        + b"\x00\x00\x00\x02e1"
        + b"\x00\x00\x00\x16accord.x.v1.job.queued"
        + b"\x00\x00\x00\x04acme"
        + b"\x00\x00\x00\x03job"
        + b"\x00\x00\x00\x02j1"
        + (1893499200123456).to_bytes(8, "big", signed=True)
        + b"\x00\x00\x00\x06env-e1"
    )
    assert chain.canonical(0, e) == expected
    assert chain.link(chain.GENESIS, 0, e) == hashlib.sha256(bytes(32) + expected).digest()


def test_moving_bytes_between_fields_changes_the_hash() -> None:
    a = event(aggregate_type="jo", aggregate_id="bj1")
    b = event(aggregate_type="job", aggregate_id="j1")
    assert chain.canonical(0, a) != chain.canonical(0, b)
    assert chain.canonical(0, a) != chain.canonical(1, a)


def test_extend_chains_from_the_head() -> None:
    records = chain.extend(-1, chain.GENESIS, [event("a"), event("b")], T)
    assert [r.index for r in records] == [0, 1]
    assert records[0].prev_hash == chain.GENESIS
    assert records[1].prev_hash == records[0].hash
    more = chain.extend(1, records[1].hash, [event("c")], T)
    assert more[0].index == 2
    verifier = chain.Verifier(0, chain.GENESIS)
    assert verifier.feed(records)
    assert verifier.feed(more)
    assert verifier.finish(3) == chain.Verification(None, 3)


def test_verifier_finds_edits_gaps_and_missing_tails() -> None:
    records = chain.extend(-1, chain.GENESIS, [event(str(i)) for i in range(4)], T)
    edited = [*records[:2], replace(records[2], event=event("forged")), records[3]]
    verifier = chain.Verifier(0, chain.GENESIS)
    assert not verifier.feed(edited)
    assert verifier.finish(4) == chain.Verification(2, 3)
    gap = chain.Verifier(0, chain.GENESIS)
    assert not gap.feed([records[0], records[2]])
    assert gap.finish(4).first_invalid == 1
    short = chain.Verifier(1, records[0].hash)
    assert short.feed(records[1:3])
    assert short.finish(4) == chain.Verification(3, 2)


def test_parse_event_keeps_the_bytes_and_microseconds() -> None:
    e = envelope_pb2.EventEnvelope(event_id="e1", event_type="accord.x.v1.job.queued")
    e.event_time.FromDatetime(T)
    e.event_time.nanos += 789  # below what Postgres keeps
    data = e.SerializeToString()
    parsed = parse_event(data)
    assert parsed.envelope == data
    assert parsed.event_time == T


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe garbage",
        envelope_pb2.EventEnvelope(event_type="accord.x.v1.job.queued").SerializeToString(),
        envelope_pb2.EventEnvelope(
            event_id="e", event_type="t", tenant_id="a\x00"
        ).SerializeToString(),
    ],
)
def test_parse_event_rejects_what_is_not_a_usable_envelope(data: bytes) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(data)
