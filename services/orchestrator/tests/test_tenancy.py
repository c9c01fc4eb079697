"""Tenant isolation of JobService with real tenant-bound tokens: tenant B ("other") can
neither see nor touch tenant A's ("acme") jobs. Another tenant's job id is NOT_FOUND,
indistinguishable from an id that never existed, and lists never include it.

The `stack` fixture gives "acme" and "other" the same allow-policy (example.com).
Schedules have their tenancy tests in test_schedules.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord.orchestrator.v1 import worker_service_pb2 as wpb
from accord.policy.v1 import policy_pb2, policy_service_pb2
from accord_kit.auth import TENANT_METADATA
from accord_kit.testing import as_tenant, eventually, refused, stamp
from services.orchestrator.tests.test_jobs import create, poll, spec, status_details

ACME = as_tenant("acme")
OTHER = as_tenant("other")
# Tenant B's own token claiming to act for tenant A.
BORROWED = (*OTHER, (TENANT_METADATA, "acme"))


async def refused_stream(call: grpc.aio.UnaryStreamCall) -> grpc.aio.AioRpcError:  # type: ignore[type-arg]
    """The error of a server stream's first read."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await asyncio.wait_for(anext(aiter(call)), 15)
    return err.value


def masked(err: grpc.aio.AioRpcError, job_id: str) -> tuple[object, ...]:
    """What a caller learns from a refusal, with the id it sent blanked out."""
    fields, info = status_details(err)
    info = {k: v.replace(job_id, "<id>") for k, v in info.items()}
    return err.code(), (err.details() or "").replace(job_id, "<id>"), fields, info


async def get(stack, job_id: str, md=ACME) -> job_pb2.Job:  # type: ignore[no-untyped-def]
    return (await stack.jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md)).job


async def failed_job(stack) -> job_pb2.Job:  # type: ignore[no-untyped-def]
    """An acme job that failed for good, so that RetryJob would accept it."""
    job = (await create(stack)).job
    (lease,) = [t.lease for t in await poll(stack) if t.lease.job_id == job.job_id]
    await stack.worker.FailTask(
        wpb.FailTaskRequest(
            worker_id="w1", lease=lease, error_code="ASSERTION_FAILED", retryable=False
        )
    )
    ended = (job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_DEAD_LETTER)

    async def failed() -> job_pb2.Job | None:
        found = await get(stack, job.job_id)
        return found if found.state in ended else None

    return await eventually(failed, 10, "the job to fail for good")


async def list_ids(stack, request: pb.ListJobsRequest, md) -> list[str]:  # type: ignore[no-untyped-def]
    """Every job id of every page of `request`, as `md`'s tenant."""
    ids: list[str] = []
    token = ""
    while True:
        request.page_token = token
        page = await stack.jobs.ListJobs(request, metadata=md)
        ids += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            return ids


async def test_get_of_another_tenants_job_is_not_found_like_a_missing_one(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    theirs = await refused(stack.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=OTHER))
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    missing_id = str(uuid.uuid4())
    missing = await refused(stack.jobs.GetJob(pb.GetJobRequest(job_id=missing_id), metadata=OTHER))
    assert masked(theirs, job.job_id) == masked(missing, missing_id), "existence must not leak"
    assert (await get(stack, job.job_id)).job_id == job.job_id  # acme still sees it


async def test_lists_hold_only_the_callers_jobs_whatever_the_filters(stack) -> None:  # type: ignore[no-untyped-def]
    start = datetime.now(UTC) - timedelta(minutes=5)
    acme_ids = [(await create(stack)).job.job_id for _ in range(3)]
    acme_ids.append((await create(stack, spec("https://evil.test/"))).job.job_id)  # REJECTED
    await poll(stack, n=1)  # one acme job RUNNING
    acme_ids.append((await failed_job(stack)).job_id)
    other_ids = [(await create(stack, md=OTHER)).job.job_id for _ in range(2)]
    every_state = [s for s in job_pb2.JobState.values() if s != job_pb2.JOB_STATE_UNSPECIFIED]
    requests = [
        pb.ListJobsRequest(),
        pb.ListJobsRequest(page_size=1),
        pb.ListJobsRequest(page_size=1000),
        pb.ListJobsRequest(states=every_state),
        pb.ListJobsRequest(
            states=[
                job_pb2.JOB_STATE_QUEUED,
                job_pb2.JOB_STATE_RUNNING,
                job_pb2.JOB_STATE_REJECTED,
                job_pb2.JOB_STATE_FAILED,
                job_pb2.JOB_STATE_DEAD_LETTER,
            ]
        ),
        pb.ListJobsRequest(engine=job_spec_pb2.ENGINE_HTTP),
        pb.ListJobsRequest(
            create_time_after=stamp(start),
            create_time_before=stamp(datetime.now(UTC) + timedelta(minutes=5)),
        ),
        pb.ListJobsRequest(page_size=2, states=every_state, create_time_after=stamp(start)),
    ]
    for request in requests:
        theirs = await list_ids(stack, request, OTHER)
        assert sorted(theirs) == sorted(other_ids), request
        mine = await list_ids(stack, request, ACME)
        assert set(mine) <= set(acme_ids), request
    assert sorted(await list_ids(stack, pb.ListJobsRequest(), ACME)) == sorted(acme_ids)
    for state in every_state:  # no state filter turns up the other tenant's jobs
        request = pb.ListJobsRequest(states=[state])
        assert not set(await list_ids(stack, request, OTHER)) & set(acme_ids), state


async def test_a_page_token_of_one_tenant_is_refused_for_another(stack) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        await create(stack)
    first = await stack.jobs.ListJobs(pb.ListJobsRequest(page_size=1), metadata=ACME)
    assert first.next_page_token
    err = await refused(
        stack.jobs.ListJobs(
            pb.ListJobsRequest(page_size=1, page_token=first.next_page_token), metadata=OTHER
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in status_details(err)[0]


async def test_watch_of_another_tenants_job_fails_not_found_on_first_read(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    for after in (0, 1):
        err = await refused_stream(
            stack.jobs.WatchJob(
                pb.WatchJobRequest(job_id=job.job_id, after_version=after), metadata=OTHER
            )
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND
    missing_id = str(uuid.uuid4())
    missing = await refused_stream(
        stack.jobs.WatchJob(pb.WatchJobRequest(job_id=missing_id), metadata=OTHER)
    )
    assert masked(err, job.job_id) == masked(missing, missing_id)
    mine = stack.jobs.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=ACME)
    first = await asyncio.wait_for(anext(aiter(mine)), 15)  # the owner still can
    assert (first.change.state, first.job.job_id) == (job_pb2.JOB_STATE_QUEUED, job.job_id)
    mine.cancel()


async def test_cancel_of_another_tenants_job_is_not_found_and_changes_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    queued = (await create(stack)).job
    err = await refused(
        stack.jobs.CancelJob(
            pb.CancelJobRequest(job_id=queued.job_id, reason="mine now"), metadata=OTHER
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    missing_id = str(uuid.uuid4())
    missing = await refused(
        stack.jobs.CancelJob(pb.CancelJobRequest(job_id=missing_id), metadata=OTHER)
    )
    assert masked(err, queued.job_id) == masked(missing, missing_id)
    after = await get(stack, queued.job_id)
    assert after.state == job_pb2.JOB_STATE_QUEUED
    assert after.version == queued.version
    assert after.status_message == queued.status_message
    # A RUNNING job is not cancelled either: its lease is not told to stop.
    [task] = await poll(stack)
    err = await refused(
        stack.jobs.CancelJob(pb.CancelJobRequest(job_id=task.lease.job_id), metadata=OTHER)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    beat = await stack.worker.Heartbeat(wpb.HeartbeatRequest(worker_id="w1", leases=[task.lease]))
    assert list(beat.cancelled) == []
    assert (await get(stack, queued.job_id)).state == job_pb2.JOB_STATE_RUNNING
    cancelled = await stack.jobs.CancelJob(pb.CancelJobRequest(job_id=queued.job_id), metadata=ACME)
    assert cancelled.job.state == job_pb2.JOB_STATE_CANCELLED  # the owner still can


async def test_retry_of_another_tenants_job_is_not_found_and_changes_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    failed = await failed_job(stack)
    err = await refused(
        stack.jobs.RetryJob(pb.RetryJobRequest(job_id=failed.job_id), metadata=OTHER)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    missing_id = str(uuid.uuid4())
    missing = await refused(
        stack.jobs.RetryJob(pb.RetryJobRequest(job_id=missing_id), metadata=OTHER)
    )
    assert masked(err, failed.job_id) == masked(missing, missing_id)
    after = await get(stack, failed.job_id)
    assert (after.state, after.version) == (failed.state, failed.version)
    assert await poll(stack) == []  # nothing was queued again
    retried = await stack.jobs.RetryJob(pb.RetryJobRequest(job_id=failed.job_id), metadata=ACME)
    assert retried.job.state == job_pb2.JOB_STATE_QUEUED  # the owner still can


async def test_a_request_id_used_by_another_tenant_makes_the_callers_own_job(stack) -> None:  # type: ignore[no-untyped-def]
    acme = await create(stack, request_id="shared")
    assert acme.created
    # The same request id with the same spec: a new job for B, not A's job handed back.
    other = await create(stack, request_id="shared", md=OTHER)
    assert other.created
    assert other.job.job_id != acme.job.job_id
    assert other.job.tenant_id == "other"
    # With another spec too: no ALREADY_EXISTS that would reveal A used the id.
    other_spec = spec("https://www.example.com/b")
    fresh = await create(stack, other_spec, request_id="shared-2", md=ACME)
    mine = await create(stack, spec(), request_id="shared-2", md=OTHER)
    assert mine.created
    assert mine.job.job_id != fresh.job.job_id
    assert mine.job.spec == spec()
    # Repeats return each tenant's own job.
    again = await create(stack, request_id="shared", md=OTHER)
    assert (again.created, again.job.job_id) == (False, other.job.job_id)
    again = await create(stack, request_id="shared", md=ACME)
    assert (again.created, again.job.job_id) == (False, acme.job.job_id)
    assert (await get(stack, acme.job.job_id)).tenant_id == "acme"


async def test_a_batch_request_id_used_by_another_tenant_makes_the_callers_own_jobs(stack) -> None:  # type: ignore[no-untyped-def]
    batch = pb.BatchCreateJobsRequest(request_id="batch", specs=[spec(), spec()])
    acme = (await stack.jobs.BatchCreateJobs(batch, metadata=ACME)).jobs
    other = (await stack.jobs.BatchCreateJobs(batch, metadata=OTHER)).jobs
    assert not {j.job_id for j in acme} & {j.job_id for j in other}
    assert {j.tenant_id for j in other} == {"other"}


async def test_another_tenants_policies_do_not_decide_the_callers_jobs(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.policies.CreatePolicy(
        policy_service_pb2.CreatePolicyRequest(
            request_id="acme-only",
            policy=policy_pb2.Policy(
                display_name="acme only",
                rules=policy_pb2.PolicyRules(allowed_domains=["acme-only.example.org"]),
            ),
        ),
        metadata=ACME,
    )
    url = "https://acme-only.example.org/"
    assert (await create(stack, spec(url))).job.state == job_pb2.JOB_STATE_QUEUED
    theirs = (await create(stack, spec(url), md=OTHER)).job
    assert theirs.state == job_pb2.JOB_STATE_REJECTED
    assert theirs.decision.outcome == decision_pb2.DECISION_OUTCOME_DENY
    assert [r.code for r in theirs.decision.reasons] == ["DOMAIN_NOT_ALLOWED"]


async def test_a_tenant_token_naming_another_tenant_is_permission_denied(stack) -> None:  # type: ignore[no-untyped-def]
    failed = await failed_job(stack)
    job = (await create(stack)).job  # after failed_job, whose poll would lease it
    unary = [
        stack.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=BORROWED),
        stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=BORROWED),
        stack.jobs.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=BORROWED),
        stack.jobs.RetryJob(pb.RetryJobRequest(job_id=failed.job_id), metadata=BORROWED),
        stack.jobs.CreateJob(
            pb.CreateJobRequest(request_id="borrowed", spec=spec()), metadata=BORROWED
        ),
        stack.jobs.BatchCreateJobs(
            pb.BatchCreateJobsRequest(request_id="borrowed", specs=[spec()]), metadata=BORROWED
        ),
    ]
    for call in unary:
        err = await refused(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert status_details(err)[1]["cause"] == "TENANT_MISMATCH"
    err = await refused_stream(
        stack.jobs.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=BORROWED)
    )
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nothing happened to acme's jobs, and nothing was created for either tenant.
    assert (await get(stack, job.job_id)).state == job_pb2.JOB_STATE_QUEUED
    assert (await get(stack, failed.job_id)).state == failed.state
    assert sorted(await list_ids(stack, pb.ListJobsRequest(), ACME)) == sorted(
        [job.job_id, failed.job_id]
    )
    assert await list_ids(stack, pb.ListJobsRequest(), OTHER) == []
    # Naming its own tenant is allowed: the refusal is about the mismatch.
    own = (*OTHER, (TENANT_METADATA, "other"))
    assert (await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=own)).jobs == []
