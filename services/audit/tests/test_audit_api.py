"""AuditService through generated stubs, fed through real JetStream, on a real Postgres."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from accord.audit.v1 import audit_service_pb2 as pb
from accord.audit.v1 import record_pb2
from accord_audit.domain import chain
from accord_audit.domain.records import parse_event
from accord_audit.testing import Harness, eventually
from accord_kit import events
from accord_kit.testing import as_tenant, channel


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]  # stubs predate grpc.aio
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def stamp(when: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(when)
    return result


def recomputed(r: record_pb2.AuditRecord) -> bytes:
    """The record's hash as an outside verifier computes it from the record alone."""
    event = parse_event(r.envelope)
    assert event.event_id == r.event_id
    assert event.event_time == r.event_time.ToDatetime(tzinfo=UTC)
    return hashlib.sha256(r.prev_hash + chain.canonical(r.index, event)).digest()


async def test_events_are_appended_in_order_as_a_hash_chain(audit: Harness) -> None:
    sent = [audit.event(name=n) for n in ("queued", "running", "succeeded")]
    await audit.publish(*sent)
    records = await audit.wait_for(*sent)
    assert [r.event_id for r in records] == [e.event_id for e in sent]
    assert [r.index for r in records] == [0, 1, 2]
    first = records[0]
    assert first.event_type == events.subject(audit.producer, "job", "queued")
    assert (first.tenant_id, first.aggregate_type) == ("acme", "job")
    assert first.aggregate_id == sent[0].aggregate_id
    assert first.envelope == sent[0].SerializeToString()
    assert first.prev_hash == bytes(32)
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.hash
    assert all(len(r.hash) == 32 and r.hash == recomputed(r) for r in records)


async def test_the_same_event_twice_is_appended_once(audit: Harness) -> None:
    event = audit.event()
    await audit.publish(event)
    await audit.publish(event)  # deduplicated by JetStream on Nats-Msg-Id
    await audit.publish(event, msg_id="redelivered")  # reaches the log: idempotent by event_id
    marker = audit.event(name="succeeded")
    await audit.publish(marker)
    records = await audit.wait_for(event, marker)
    assert [r.event_id for r in records] == [event.event_id, marker.event_id]
    assert [r.index for r in records] == [0, 1]


async def test_a_message_that_is_not_an_envelope_is_acked_and_skipped(audit: Harness) -> None:
    await audit.publish_raw(b"\xff\xfe not a protobuf")
    event = audit.event()
    await audit.publish(event)
    records = await audit.wait_for(event)
    assert [r.index for r in records] == [0]
    js = audit.nc.jetstream()
    stream = events.stream_name(audit.producer)
    durable = audit.app.settings.durable_name

    async def settled() -> bool | None:
        info = await js.consumer_info(stream, durable)
        return True if info.num_ack_pending == 0 and info.num_pending == 0 else None

    await eventually(settled, what="the consumer to ack everything")


async def test_verify_range_reports_a_tampered_record(audit: Harness) -> None:
    sent = [audit.event(), audit.event(tenant="other"), audit.event()]
    await audit.publish(*sent)
    await audit.wait_for(sent[0], sent[2])
    await audit.wait_for(sent[1], tenant="other")
    clean = await audit.stub.VerifyRange(pb.VerifyRangeRequest())
    assert (clean.valid, clean.first_invalid_index, clean.checked_count) == (True, -1, 3)

    conn = await asyncpg.connect(audit.database_url.replace("+asyncpg", ""))
    try:
        forged = audit.event(tenant="other").SerializeToString()
        await conn.execute("UPDATE audit.records SET envelope = $1 WHERE record_index = 1", forged)
    finally:
        await conn.close()

    tampered = await audit.stub.VerifyRange(pb.VerifyRangeRequest())
    assert (tampered.valid, tampered.first_invalid_index) == (False, 1)
    before = await audit.stub.VerifyRange(pb.VerifyRangeRequest(start_index=0, end_index=1))
    assert (before.valid, before.checked_count) == (True, 1)
    # A range after the forgery chains from the stored hash before it, which is untouched.
    after = await audit.stub.VerifyRange(pb.VerifyRangeRequest(start_index=2))
    assert (after.valid, after.checked_count) == (True, 1)


async def test_verify_range_past_the_end_is_a_failed_precondition(audit: Harness) -> None:
    event = audit.event()
    await audit.publish(event)
    await audit.wait_for(event)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await audit.stub.VerifyRange(pb.VerifyRangeRequest(start_index=0, end_index=5))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    empty = await audit.stub.VerifyRange(pb.VerifyRangeRequest(start_index=1))
    assert (empty.valid, empty.checked_count) == (True, 0)


async def test_a_tenant_sees_only_its_own_records(audit: Harness) -> None:
    mine, theirs = audit.event(tenant="acme"), audit.event(tenant="other")
    await audit.publish(mine, theirs)
    acme = await audit.wait_for(mine)
    other = await audit.wait_for(theirs, tenant="other")
    assert [r.event_id for r in acme] == [mine.event_id]
    assert [r.event_id for r in other] == [theirs.event_id]
    for request in (
        pb.GetRecordRequest(index=acme[0].index),
        pb.GetRecordRequest(event_id=mine.event_id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await audit.stub.GetRecord(request, metadata=as_tenant("other"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    by_index = await audit.stub.GetRecord(
        pb.GetRecordRequest(index=acme[0].index), metadata=as_tenant("acme")
    )
    by_id = await audit.stub.GetRecord(
        pb.GetRecordRequest(event_id=mine.event_id), metadata=as_tenant("acme")
    )
    assert by_index.record == by_id.record == acme[0]


async def test_list_filters_by_type_aggregate_and_time(audit: Harness) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    job = audit.event(aggregate="job", name="queued", aggregate_id="job-1", event_time=t0)
    later = audit.event(
        aggregate="job", name="running", aggregate_id="job-1", event_time=t0 + timedelta(hours=1)
    )
    other_job = audit.event(aggregate="job", name="queued", event_time=t0 + timedelta(hours=2))
    policy = audit.event(aggregate="policy", name="created", event_time=t0 + timedelta(hours=3))
    await audit.publish(job, later, other_job, policy)
    await audit.wait_for(job, later, other_job, policy)

    def ids(records: list[record_pb2.AuditRecord]) -> list[str]:
        return [r.event_id for r in records]

    prefix = f"accord.{audit.producer}.v1.job."
    assert ids(await audit.listed(event_type_prefix=prefix)) == ids_of(job, later, other_job)
    assert ids(await audit.listed(aggregate_id="job-1")) == ids_of(job, later)
    window = await audit.listed(
        event_time_after=stamp(t0 + timedelta(hours=1)),
        event_time_before=stamp(t0 + timedelta(hours=3)),
    )
    assert ids(window) == ids_of(later, other_job)
    assert await audit.listed(event_type_prefix="accord.%") == []  # LIKE wildcards are literal


def ids_of(*envelopes: object) -> list[str]:
    return [e.event_id for e in envelopes]  # type: ignore[attr-defined]


async def test_list_pages_through_the_log(audit: Harness) -> None:
    sent = [audit.event() for _ in range(5)]
    await audit.publish(*sent)
    await audit.wait_for(*sent)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await audit.stub.ListRecords(
            pb.ListRecordsRequest(page_size=2, page_token=token), metadata=as_tenant("acme")
        )
        seen += [r.event_id for r in response.records]
        pages += 1
        token = response.next_page_token
        if not token:
            break
    assert seen == ids_of(*sent)
    assert pages == 3


async def test_stream_records_sends_the_tail_then_follows(audit: Harness) -> None:
    first, second = audit.event(), audit.event()
    await audit.publish(first, second)
    await audit.wait_for(first, second)
    call = audit.stub.StreamRecords(
        pb.StreamRecordsRequest(from_index=1), metadata=as_tenant("acme")
    )
    received = aiter(call)

    async def next_id() -> str:
        response: pb.StreamRecordsResponse = await asyncio.wait_for(anext(received), 15)
        return response.record.event_id

    assert await next_id() == second.event_id
    foreign, third = audit.event(tenant="other"), audit.event()
    await audit.publish(foreign, third)
    assert await next_id() == third.event_id  # the other tenant's record was skipped
    call.cancel()


async def test_stream_records_filters_by_type(audit: Harness) -> None:
    queued, policy = audit.event(name="queued"), audit.event(aggregate="policy", name="created")
    await audit.publish(queued, policy)
    call = audit.stub.StreamRecords(
        pb.StreamRecordsRequest(event_type_prefix=f"accord.{audit.producer}.v1.policy."),
        metadata=as_tenant("acme"),
    )
    response = await asyncio.wait_for(anext(aiter(call)), 15)
    assert response.record.event_id == policy.event_id
    assert response.record.index == 1
    call.cancel()


INVALID = [
    ("GetRecord", pb.GetRecordRequest(), "key"),
    ("GetRecord", pb.GetRecordRequest(index=-1), "index"),
    ("GetRecord", pb.GetRecordRequest(event_id="x" * 65), "event_id"),
    ("ListRecords", pb.ListRecordsRequest(page_size=5000), "page_size"),
    ("ListRecords", pb.ListRecordsRequest(page_token="not-a-token"), "page_token"),
    ("ListRecords", pb.ListRecordsRequest(event_type_prefix="a" * 300), "event_type_prefix"),
    (
        "ListRecords",
        pb.ListRecordsRequest(
            event_time_after=stamp(datetime(2030, 1, 2, tzinfo=UTC)),
            event_time_before=stamp(datetime(2030, 1, 1, tzinfo=UTC)),
        ),
        "event_time_before",
    ),
    (
        "ListRecords",
        pb.ListRecordsRequest(event_time_after=timestamp_pb2.Timestamp(seconds=10**15)),
        "event_time_after",
    ),
    ("VerifyRange", pb.VerifyRangeRequest(start_index=-1), "start_index"),
    ("VerifyRange", pb.VerifyRangeRequest(start_index=3, end_index=2), "end_index"),
]


@pytest.mark.parametrize(("method", "request_", "field"), INVALID)
async def test_invalid_requests_name_the_field(
    audit: Harness, method: str, request_: object, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        # A service token acting for acme: VerifyRange is an operator's call.
        await getattr(audit.stub, method)(request_, metadata=(("accord-tenant", "acme"),))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value)


async def test_invalid_stream_request_and_tenant(audit: Harness) -> None:
    call = audit.stub.StreamRecords(pb.StreamRecordsRequest(from_index=-1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(aiter(call))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "from_index" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        # A service token names the tenant it acts for; a malformed name is refused.
        await audit.stub.ListRecords(
            pb.ListRecordsRequest(), metadata=(("accord-tenant", "Not A Tenant"),)
        )
    assert "accord-tenant" in violations(err.value)


async def test_a_page_token_is_bound_to_its_filters(audit: Harness) -> None:
    sent = [audit.event(aggregate_id="job-1") for _ in range(2)]
    await audit.publish(*sent)
    await audit.wait_for(*sent)
    first = await audit.stub.ListRecords(
        pb.ListRecordsRequest(page_size=1), metadata=as_tenant("acme")
    )
    assert first.next_page_token
    for tenant, request in (
        ("acme", pb.ListRecordsRequest(aggregate_id="job-1", page_token=first.next_page_token)),
        ("other", pb.ListRecordsRequest(page_token=first.next_page_token)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await audit.stub.ListRecords(request, metadata=as_tenant(tenant))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in violations(err.value)


async def test_v1_proof_rpcs_are_unimplemented_and_point_to_v2(audit: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await audit.stub.GetCheckpoint(pb.GetCheckpointRequest())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "accord.audit.v2.AuditService" in str(err.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(aiter(audit.stub.ExportRecords(pb.ExportRecordsRequest())))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_health_reports_serving_with_postgres_and_nats(audit: Harness) -> None:
    async with channel(audit.app.port) as ch:
        health = health_pb2_grpc.HealthStub(ch)

        async def serving() -> bool | None:
            response = await health.Check(
                health_pb2.HealthCheckRequest(service="accord.audit.v1.AuditService")
            )
            return True if response.status == health_pb2.HealthCheckResponse.SERVING else None

        assert await eventually(serving, what="SERVING")
