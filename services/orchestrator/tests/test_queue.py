"""The queue's limits through generated stubs: sizes every hop can carry, leases that never
reached their worker, concurrency keys, concurrent creates, and retention."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import grpc
import pytest

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord.orchestrator.v1 import worker_service_pb2 as wpb
from accord.policy.v1 import policy_pb2, policy_service_pb2
from accord_kit.testing import as_tenant, field_violations, refused

ACME, OTHER = as_tenant("acme"), as_tenant("other")
MIB = 1024 * 1024


def small(**kw) -> js.JobSpec:  # type: ignore[no-untyped-def]
    return js.JobSpec(
        engine=js.ENGINE_HTTP,
        steps=[js.Step(request=js.RequestStep(url="https://example.com/"))],
        **kw,
    )


def sized(total: int) -> js.JobSpec:
    """A spec whose encoding is `total` bytes or a little less: POST bodies of up to 1 MiB."""
    spec = js.JobSpec(engine=js.ENGINE_HTTP)
    while (room := total - spec.ByteSize() - 64) > 0:
        body = b"x" * min(MIB, room)
        spec.steps.append(
            js.Step(request=js.RequestStep(method="POST", url="https://example.com/", body=body))
        )
    return spec


def keyed(key: str, limit: int) -> js.JobSpec:
    return small(concurrency=js.ConcurrencyLimit(key=key, max_running=limit))


async def create(stack, spec: js.JobSpec, md=ACME) -> job_pb2.Job:  # type: ignore[no-untyped-def]
    request = pb.CreateJobRequest(request_id=uuid.uuid4().hex, spec=spec)
    return (await stack.jobs.CreateJob(request, metadata=md)).job


async def poll(stack, n: int = 100, **kw) -> list[wpb.Task]:  # type: ignore[no-untyped-def]
    request = wpb.PollTasksRequest(worker_id="w1", max_tasks=n, **kw)
    return list((await stack.worker.PollTasks(request)).tasks)


async def complete(stack, tasks: list[wpb.Task]) -> wpb.CompleteTaskResponse:  # type: ignore[no-untyped-def]
    completions = [wpb.TaskCompletion(lease=t.lease) for t in tasks]
    return await stack.worker.CompleteTask(
        wpb.CompleteTaskRequest(worker_id="w1", completions=completions)
    )


async def get(stack, job_id: str, md=ACME) -> job_pb2.Job:  # type: ignore[no-untyped-def]
    return (await stack.jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md)).job


async def test_a_maximal_spec_leased_with_small_jobs_of_other_tenants_costs_no_attempt(
    stack,  # type: ignore[no-untyped-def]
) -> None:
    big = await create(stack, sized(4 * MIB))
    smalls = [await create(stack, small(), md=OTHER) for _ in range(5)]
    tasks = await poll(stack, n=10)
    assert {t.lease.job_id for t in tasks} == {big.job_id} | {j.job_id for j in smalls}
    assert (await complete(stack, tasks)).stale_leases == []
    for job_id, md in [(big.job_id, ACME)] + [(j.job_id, OTHER) for j in smalls]:
        done = await get(stack, job_id, md)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED
        assert [a.number for a in done.attempts] == [1]


async def test_a_lease_batch_is_bounded_by_bytes_and_the_rest_follows(stack) -> None:  # type: ignore[no-untyped-def]
    bigs = [await create(stack, sized(4 * MIB)) for _ in range(3)]
    first = await poll(stack, n=10)
    assert 1 <= len(first) < 3
    assert sum(t.spec.ByteSize() for t in first) <= 8 * MIB
    rest = await poll(stack, n=10) + await poll(stack, n=10)
    assert sorted(t.lease.job_id for t in first + rest) == sorted(j.job_id for j in bigs)


async def test_a_spec_no_hop_can_carry_is_refused_at_submission(stack) -> None:  # type: ignore[no-untyped-def]
    err = await refused(create(stack, sized(4 * MIB + 2048)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec" in field_violations(err)
    batch = pb.BatchCreateJobsRequest(request_id="too-big", specs=[sized(3 * MIB)] * 3)
    err = await refused(stack.jobs.BatchCreateJobs(batch, metadata=ACME))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "specs" in field_violations(err)
    assert list((await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)).jobs) == []


async def test_a_lease_whose_poll_was_cancelled_goes_back_at_once(stack, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """The poll is held up in its transaction (a test-held key lock), its caller gives up, and
    the lease it then takes is returned: QUEUED again with no attempt spent."""
    job = await create(stack, keyed("k", 1))
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtextextended('acme' || chr(31) || 'k', 7))")
        err = await refused(
            stack.worker.PollTasks(wpb.PollTasksRequest(worker_id="w1", max_tasks=1), timeout=0.5)
        )
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await conn.execute("SELECT pg_advisory_unlock_all()")
        deadline = asyncio.get_running_loop().time() + 10
        while (found := await get(stack, job.job_id)).version < 3:  # admitted, leased, returned
            assert asyncio.get_running_loop().time() < deadline, found
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    assert found.state == job_pb2.JOB_STATE_QUEUED
    assert list(found.attempts) == []
    [task] = await poll(stack)
    assert task.lease.attempt == 1


async def test_concurrency_keys_cap_running_jobs_in_queue_order_without_starving_others(
    stack,  # type: ignore[no-untyped-def]
) -> None:
    capped = [await create(stack, keyed("shop", 2)) for _ in range(5)]
    free = [await create(stack, small()) for _ in range(3)]
    other_tenant = await create(stack, keyed("shop", 2), md=OTHER)  # keys are per tenant
    first = await poll(stack)
    leased = {t.lease.job_id for t in first}
    assert leased == {capped[0].job_id, capped[1].job_id, other_tenant.job_id} | {
        j.job_id for j in free
    }
    assert await poll(stack) == []  # the key is full
    await complete(stack, [t for t in first if t.lease.job_id == capped[0].job_id])
    [nxt] = await poll(stack)
    assert nxt.lease.job_id == capped[2].job_id  # FIFO within the key


async def test_concurrent_creates_with_one_request_id_make_one_job(stack) -> None:  # type: ignore[no-untyped-def]
    request = pb.CreateJobRequest(request_id="once", spec=small())
    replies = await asyncio.gather(
        *(stack.jobs.CreateJob(request, metadata=ACME) for _ in range(50))
    )
    assert len({r.job.job_id for r in replies}) == 1
    assert sum(r.created for r in replies) == 1
    listed = (await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)).jobs
    assert [j.job_id for j in listed] == [replies[0].job.job_id]


async def test_concurrent_creates_are_admitted_together_each_its_own_job(stack) -> None:  # type: ignore[no-untyped-def]
    requests = [pb.CreateJobRequest(request_id=f"r{i}", spec=small(priority=i)) for i in range(40)]
    replies = await asyncio.gather(*(stack.jobs.CreateJob(r, metadata=ACME) for r in requests))
    assert all(r.created for r in replies)
    assert [r.job.request_id for r in replies] == [r.request_id for r in requests]
    assert [r.job.spec.priority for r in replies] == list(range(40))
    assert len({r.job.job_id for r in replies}) == 40


async def test_one_request_id_with_two_specs_at_once_is_one_job_and_one_conflict(stack) -> None:  # type: ignore[no-untyped-def]
    calls = [
        stack.jobs.CreateJob(
            pb.CreateJobRequest(request_id="same", spec=small(priority=p)), metadata=ACME
        )
        for p in (1, 2)
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    made = [o for o in outcomes if isinstance(o, pb.CreateJobResponse)]
    refused_ = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(made) == 1
    assert made[0].created
    assert [e.code() for e in refused_] == [grpc.StatusCode.ALREADY_EXISTS]


async def test_finished_jobs_are_pruned_after_retention_and_live_ones_kept(stack) -> None:  # type: ignore[no-untyped-def]
    done = await create(stack, small())
    await complete(stack, await poll(stack))
    waiting = await create(stack, small())
    running = await create(stack, small())
    [task] = await poll(stack, n=1)
    assert task.lease.job_id in (waiting.job_id, running.job_id)
    assert await stack.app.queue.prune(timedelta(hours=1), batch=10) == 0  # too young
    assert await stack.app.queue.prune(timedelta(0), batch=1) == 1
    assert (await refused(get(stack, done.job_id))).code() == grpc.StatusCode.NOT_FOUND
    for job in (waiting, running):
        assert (await get(stack, job.job_id)).state in (
            job_pb2.JOB_STATE_QUEUED,
            job_pb2.JOB_STATE_RUNNING,
        )


async def test_each_tenants_finished_jobs_are_pruned_after_its_own_retention(  # type: ignore[no-untyped-def]
    stack, database_url: str
) -> None:
    """The default here is 7 days; one tenant keeps 1 hour, another 90 days, one sets none."""
    run = uuid.uuid4().hex[:8]
    brief, long, plain = f"brief-{run}", f"long-{run}", f"plain-{run}"
    for tenant, seconds in ((brief, 3600), (long, 90 * 86400), (plain, 0)):
        rules = policy_pb2.PolicyRules(allowed_domains=["example.org"])  # refuses small()
        if seconds:
            rules.retention.FromSeconds(seconds)
        await stack.policies.CreatePolicy(
            policy_service_pb2.CreatePolicyRequest(
                request_id="keep", policy=policy_pb2.Policy(display_name="keep", rules=rules)
            ),
            metadata=as_tenant(tenant),
        )
    made = {}
    for tenant in (brief, long, plain):
        for days in (0.1, 40):  # finished 2.4 hours and 40 days ago
            job = await create(stack, small(), md=as_tenant(tenant))
            assert job.state == job_pb2.JOB_STATE_REJECTED  # finished at once
            made[tenant, days] = job.job_id
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        for (_, days), job_id in made.items():
            await conn.execute(
                "UPDATE orchestrator.jobs SET finish_time = now() - make_interval(secs => $2)"
                " WHERE job_id::text = $1",
                job_id,
                days * 86400,
            )
    finally:
        await conn.close()

    assert await stack.app.prune() >= 3
    kept, gone = set(), set()
    for (tenant, days), job_id in made.items():
        try:
            await get(stack, job_id, md=as_tenant(tenant))
            kept.add((tenant, days))
        except grpc.aio.AioRpcError as exc:
            gone.add((tenant, days, exc.code()))
    assert kept == {(long, 0.1), (long, 40), (plain, 0.1)}
    not_found = grpc.StatusCode.NOT_FOUND
    assert gone == {(brief, 0.1, not_found), (brief, 40, not_found), (plain, 40, not_found)}


@pytest.mark.parametrize(
    ("concurrency", "field"),
    [
        (js.ConcurrencyLimit(key="", max_running=1), "spec.concurrency.key"),
        (js.ConcurrencyLimit(key="k" * 129, max_running=1), "spec.concurrency.key"),
        (js.ConcurrencyLimit(key="k", max_running=0), "spec.concurrency.max_running"),
        (js.ConcurrencyLimit(key="k", max_running=1001), "spec.concurrency.max_running"),
    ],
)
async def test_invalid_concurrency_limits(
    stack, concurrency: js.ConcurrencyLimit, field: str
) -> None:  # type: ignore[no-untyped-def]
    err = await refused(create(stack, small(concurrency=concurrency)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err)
