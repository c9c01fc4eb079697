"""Tenant isolation of AuditService with real tenant-bound tokens: records published for
tenant A ("acme") are invisible to tenant B ("other") through every read the API offers.

Every test first waits until acme's records are in the log (read back as acme), so that
what B does not see is absent because of the tenant, not because it was not appended yet.
In v1 checkpoints, proofs and export answer UNIMPLEMENTED; the per-tenant logs of v2 are
covered in test_tenant_logs.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc

from accord.audit.v1 import audit_service_pb2 as pb
from accord.audit.v1 import record_pb2
from accord_audit.testing import Harness
from accord_kit.auth import TENANT_METADATA
from accord_kit.testing import as_tenant, error_info, refused, stamp

ACME = as_tenant("acme")
OTHER = as_tenant("other")
# Tenant B's own token claiming to act for tenant A.
BORROWED = (*OTHER, (TENANT_METADATA, "acme"))


def ids(records: list[record_pb2.AuditRecord]) -> list[str]:
    return [r.event_id for r in records]


async def mixed_log(audit: Harness) -> tuple[list[str], list[str]]:
    """acme and other events interleaved in the log; their event ids, in log order."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    acme = [
        audit.event(tenant="acme", aggregate_id="job-a", event_time=t0),
        audit.event(tenant="acme", aggregate="policy", name="created", event_time=t0),
        audit.event(tenant="acme", aggregate_id="job-a", name="running", event_time=t0),
    ]
    other = [
        audit.event(tenant="other", aggregate_id="job-b", event_time=t0),
        audit.event(tenant="other", aggregate_id="job-b", name="running", event_time=t0),
    ]
    await audit.publish(acme[0], other[0], acme[1], acme[2], other[1])
    await audit.wait_for(*acme, tenant="acme")
    await audit.wait_for(*other, tenant="other")
    return ids(acme), ids(other)


async def test_list_returns_only_the_callers_records_whatever_the_filters(
    audit: Harness,
) -> None:
    acme, other = await mixed_log(audit)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    job_prefix = f"accord.{audit.producer}.v1.job."
    assert ids(await audit.listed("acme")) == acme
    assert ids(await audit.listed("other")) == other
    assert ids(await audit.listed("other", event_type_prefix=job_prefix)) == other
    assert (
        await audit.listed("other", event_type_prefix=f"accord.{audit.producer}.v1.policy.") == []
    )
    assert await audit.listed("other", aggregate_id="job-a") == []  # acme's aggregate
    window = {
        "event_time_after": stamp(t0 - timedelta(hours=1)),
        "event_time_before": stamp(t0 + timedelta(hours=1)),
    }
    assert ids(await audit.listed("other", **window)) == other
    assert await audit.listed("nobody") == []
    seen: list[str] = []
    token = ""
    while True:  # page by page: a page boundary never lets an acme record through
        page = await audit.stub.ListRecords(
            pb.ListRecordsRequest(page_size=1, page_token=token), metadata=OTHER
        )
        seen += ids(list(page.records))
        token = page.next_page_token
        if not token:
            break
    assert seen == other
    assert {r.tenant_id for r in await audit.listed("other")} == {"other"}


async def test_a_page_token_of_one_tenant_is_refused_for_another(audit: Harness) -> None:
    await mixed_log(audit)
    first = await audit.stub.ListRecords(pb.ListRecordsRequest(page_size=1), metadata=ACME)
    assert first.next_page_token
    err = await refused(
        audit.stub.ListRecords(
            pb.ListRecordsRequest(page_size=1, page_token=first.next_page_token), metadata=OTHER
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_of_another_tenants_record_is_not_found_like_a_missing_one(
    audit: Harness,
) -> None:
    acme, _ = await mixed_log(audit)
    records = await audit.listed("acme")
    size = max(r.index for r in await audit.listed("other")) + 1
    for record in records:
        for theirs, missing, key, absent in (
            (
                pb.GetRecordRequest(index=record.index),
                pb.GetRecordRequest(index=size + 100),
                str(record.index),
                str(size + 100),
            ),
            (
                pb.GetRecordRequest(event_id=record.event_id),
                pb.GetRecordRequest(event_id="0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a"),
                record.event_id,
                "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a",
            ),
        ):
            err = await refused(audit.stub.GetRecord(theirs, metadata=OTHER))
            assert err.code() == grpc.StatusCode.NOT_FOUND
            nothing = await refused(audit.stub.GetRecord(missing, metadata=OTHER))
            assert (err.details() or "").replace(key, "<key>") == (nothing.details() or "").replace(
                absent, "<key>"
            )
            assert error_info(err) == error_info(nothing)
            mine = await audit.stub.GetRecord(theirs, metadata=ACME)  # the owner still can
            assert mine.record == record
    assert ids(records) == acme


async def test_stream_sends_only_the_callers_records_then_follows_them(audit: Harness) -> None:
    _, other = await mixed_log(audit)
    acme_records = await audit.listed("acme")
    other_records = await audit.listed("other")
    # From 0, and from exactly an acme record's index: only B's records come.
    for from_index in (0, acme_records[1].index):
        expected = [r for r in other_records if r.index >= from_index]
        assert expected
        call = audit.stub.StreamRecords(
            pb.StreamRecordsRequest(from_index=from_index), metadata=OTHER
        )
        received = aiter(call)
        got = [(await asyncio.wait_for(anext(received), 15)).record for _ in expected]
        call.cancel()
        assert got == expected
    # Following: acme's new records are skipped, B's next one is what arrives.
    call = audit.stub.StreamRecords(
        pb.StreamRecordsRequest(from_index=max(r.index for r in acme_records) + 1),
        metadata=OTHER,
    )
    received = aiter(call)
    last = (await asyncio.wait_for(anext(received), 15)).record
    assert last.event_id == other[-1]
    foreign = [audit.event(tenant="acme") for _ in range(3)]
    mine = audit.event(tenant="other")
    await audit.publish(*foreign, mine)
    arrived = (await asyncio.wait_for(anext(received), 15)).record
    call.cancel()
    assert arrived.event_id == mine.event_id
    await audit.wait_for(*foreign, tenant="acme")  # they were appended, just not shown to B
    # A type filter matching acme's policy record: B's first is its own, later, one.
    theirs = audit.event(tenant="other", aggregate="policy", name="created")
    await audit.publish(theirs)
    call = audit.stub.StreamRecords(
        pb.StreamRecordsRequest(event_type_prefix=f"accord.{audit.producer}.v1.policy."),
        metadata=OTHER,
    )
    first = (await asyncio.wait_for(anext(aiter(call)), 15)).record
    call.cancel()
    assert first.event_id == theirs.event_id
    assert first.index > acme_records[1].index  # acme's policy record came before it


async def test_verify_range_spans_tenants_and_is_refused_to_tenant_tokens(
    audit: Harness,
) -> None:
    await mixed_log(audit)
    for md in (OTHER, ACME):
        err = await refused(audit.stub.VerifyRange(pb.VerifyRangeRequest(), metadata=md))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(err)["cause"] == "SERVICE_TOKEN_REQUIRED"
    # An operator's service token may: the chain covers both tenants' records.
    verified = await audit.stub.VerifyRange(pb.VerifyRangeRequest())
    assert (verified.valid, verified.checked_count) == (True, 5)


async def test_a_tenant_token_naming_another_tenant_is_permission_denied(audit: Harness) -> None:
    acme, _ = await mixed_log(audit)
    record = (await audit.listed("acme"))[0]
    calls = [
        audit.stub.ListRecords(pb.ListRecordsRequest(), metadata=BORROWED),
        audit.stub.GetRecord(pb.GetRecordRequest(index=record.index), metadata=BORROWED),
        audit.stub.GetRecord(pb.GetRecordRequest(event_id=record.event_id), metadata=BORROWED),
        audit.stub.VerifyRange(pb.VerifyRangeRequest(), metadata=BORROWED),
    ]
    for call in calls:
        err = await refused(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(err)["cause"] == "TENANT_MISMATCH"
    stream = audit.stub.StreamRecords(pb.StreamRecordsRequest(), metadata=BORROWED)
    err = await refused(asyncio.wait_for(anext(aiter(stream)), 15))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err)["cause"] == "TENANT_MISMATCH"
    # Naming its own tenant is allowed: the refusal is about the mismatch.
    own = (*OTHER, (TENANT_METADATA, "other"))
    listed = await audit.stub.ListRecords(pb.ListRecordsRequest(), metadata=own)
    assert not set(ids(list(listed.records))) & set(acme)
    assert len(listed.records) == 2
