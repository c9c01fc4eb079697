"""Checks of the tenant's audit log after a run: each job's changes in order, and the whole
log verified by the running audit service through accord.audit.v2."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from accord.audit.v2 import audit_service_pb2 as pb
from accord.audit.v2 import audit_service_pb2_grpc
from accord.events.v1 import envelope_pb2, job_events_pb2
from accord_kit.stack import Stack
from accord_kit.testing import as_tenant
from tests.e2e.workload import TENANT, connect


async def assert_log_in_order_and_verified(stack: Stack, job_ids: Sequence[str]) -> None:
    """The tenant log has indexes 0..n-1, each job's versions rise with the index, and
    VerifyRange and the latest checkpoint cover all n records."""
    conn = await connect(stack)
    try:
        rows = await conn.fetch(
            "SELECT tenant_index, envelope FROM audit.records WHERE tenant_id = $1 "
            "ORDER BY tenant_index",
            TENANT,
        )
    finally:
        await conn.close()
    assert [r["tenant_index"] for r in rows] == list(range(len(rows)))
    versions: dict[str, list[int]] = {}
    for r in rows:
        event = envelope_pb2.EventEnvelope.FromString(r["envelope"])
        change = job_events_pb2.JobStateChanged()
        if event.aggregate_type == "job" and event.payload.Unpack(change):
            versions.setdefault(change.job_id, []).append(change.change.version)
    out_of_order = [j for j in job_ids if versions.get(j) != sorted(versions.get(j, []))]
    assert not out_of_order, (
        f"{len(out_of_order)} jobs audited out of order, of {len(rows)} records: "
        f"{[(j, versions.get(j)) for j in out_of_order[:3]]}"
    )
    async with grpc.aio.insecure_channel(stack.target("audit")) as channel:
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        tenant = as_tenant(TENANT)
        check = await stub.VerifyRange(pb.VerifyRangeRequest(), metadata=tenant)
        assert (check.valid, check.checked_count, check.failure) == (True, len(rows), "")
        cp = await stub.GetCheckpoint(pb.GetCheckpointRequest(), metadata=tenant)
        assert cp.checkpoint.tree_size >= len(rows)
