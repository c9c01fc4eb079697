"""JobService and WorkerService through generated stubs: the life of a job, end to end."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accord.common.v1 import decision_pb2, job_result_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord.orchestrator.v1 import worker_service_pb2 as wpb
from accord_kit.testing import as_tenant, field_violations, refused, unrunnable_specs
from accord_policy.app import App as PolicyApp

ACME = as_tenant("acme")


def spec(url: str = "https://example.com/", **kw) -> job_spec_pb2.JobSpec:  # type: ignore[no-untyped-def]
    return job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[job_spec_pb2.Step(name="page", request=job_spec_pb2.RequestStep(url=url))],
        **kw,
    )


async def create(stack, s=None, request_id=None, md=ACME) -> pb.CreateJobResponse:  # type: ignore[no-untyped-def]
    return await stack.jobs.CreateJob(
        pb.CreateJobRequest(request_id=request_id or uuid.uuid4().hex, spec=s or spec()),
        metadata=md,
    )


async def poll(stack, n: int = 10, lease_seconds: int = 30, wait: float = 0) -> list[wpb.Task]:  # type: ignore[no-untyped-def]
    response = await stack.worker.PollTasks(
        wpb.PollTasksRequest(
            worker_id="w1",
            max_tasks=n,
            lease_duration=duration_pb2.Duration(seconds=lease_seconds),
            wait=duration_pb2.Duration(nanos=int(wait * 1e9))
            if wait < 1
            else duration_pb2.Duration(seconds=int(wait)),
        )
    )
    return list(response.tasks)


async def wait_state(stack, job_id: str, state: int, timeout: float = 10) -> job_pb2.Job:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await stack.jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=ACME)).job
        if job.state == state or asyncio.get_running_loop().time() > deadline:
            return job
        await asyncio.sleep(0.05)


def status_details(err: grpc.aio.AioRpcError) -> tuple[dict[str, str], dict[str, str]]:
    status = rpc_status.from_call(err)
    assert status is not None
    fields: dict[str, str] = {}
    info: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.update({v.field: v.description for v in bad.field_violations})
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            ei = error_details_pb2.ErrorInfo()
            detail.Unpack(ei)
            info = {"reason": ei.reason, **ei.metadata}
    return fields, info


async def test_create_queues_allowed_job_with_decision(stack) -> None:  # type: ignore[no-untyped-def]
    created = await create(stack, request_id="r-1")
    assert created.created
    job = created.job
    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert job.decision.outcome == decision_pb2.DECISION_OUTCOME_ALLOW
    assert job.decision.policy_revision >= 1
    got = (await stack.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=ACME)).job
    assert got.spec == spec()
    assert got.request_id == "r-1"


async def test_request_id_is_idempotent(stack) -> None:  # type: ignore[no-untyped-def]
    first = await create(stack, request_id="same")
    again = await create(stack, request_id="same")
    assert not again.created
    assert again.job.job_id == first.job.job_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(stack, spec("https://www.example.com/other"), request_id="same")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)
    assert len(listed.jobs) == 1


async def test_denied_job_is_stored_rejected_and_never_leased(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack, spec("https://evil.test/"))).job
    assert job.state == job_pb2.JOB_STATE_REJECTED
    assert job.decision.outcome == decision_pb2.DECISION_OUTCOME_DENY
    assert job.decision.reasons[0].code == "DOMAIN_NOT_ALLOWED"
    assert "evil.test" in job.status_message
    assert await poll(stack) == []


async def test_policy_down_fails_closed_and_stores_nothing(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.policy_app.stop()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(stack, request_id="while-down")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    _, info = status_details(err.value)
    assert info["dependency"] == "policy"
    listed = await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)
    assert list(listed.jobs) == []
    settings = stack.policy_app.settings.model_copy(update={"port": stack.policy_app.port})
    stack.policy_app = PolicyApp(settings)  # back on the same port: the same request succeeds
    await stack.policy_app.start()
    assert (await create(stack, request_id="while-down")).job.state == job_pb2.JOB_STATE_QUEUED


async def test_batch_is_all_or_nothing_and_idempotent(stack) -> None:  # type: ignore[no-untyped-def]
    specs = [spec(), spec("https://www.example.com/b"), spec("https://evil.test/")]
    batch = pb.BatchCreateJobsRequest(request_id="batch-1", specs=specs)
    jobs = (await stack.jobs.BatchCreateJobs(batch, metadata=ACME)).jobs
    assert [j.request_id for j in jobs] == ["batch-1/0", "batch-1/1", "batch-1/2"]
    assert [j.state for j in jobs] == [job_pb2.JOB_STATE_QUEUED] * 2 + [job_pb2.JOB_STATE_REJECTED]
    again = (await stack.jobs.BatchCreateJobs(batch, metadata=ACME)).jobs
    assert [j.job_id for j in again] == [j.job_id for j in jobs]
    changed = pb.BatchCreateJobsRequest(request_id="batch-1", specs=specs[:2])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.BatchCreateJobs(changed, metadata=ACME)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    bad = pb.BatchCreateJobsRequest(
        request_id="batch-2", specs=[spec(), job_spec_pb2.JobSpec(engine=job_spec_pb2.ENGINE_HTTP)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.BatchCreateJobs(bad, metadata=ACME)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "specs[1].steps" in status_details(err.value)[0]
    listed = await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)
    assert len(listed.jobs) == 3  # nothing of the invalid batch was stored


@pytest.mark.parametrize(("bad", "field"), unrunnable_specs("https://example.com/"))
async def test_a_spec_that_could_never_run_is_refused_whole(stack, bad, field) -> None:  # type: ignore[no-untyped-def]
    """CreateJob and BatchCreateJobs refuse it up front, naming the field, storing nothing."""
    err = await refused(create(stack, bad))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"spec.{field}" in field_violations(err)
    batch = pb.BatchCreateJobsRequest(request_id="batch-bad", specs=[spec(), spec(), bad])
    err = await refused(stack.jobs.BatchCreateJobs(batch, metadata=ACME))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == [f"specs[2].{field}"]
    assert list((await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)).jobs) == []


async def test_batch_stores_nothing_when_policy_is_down(stack) -> None:  # type: ignore[no-untyped-def]
    await stack.policy_app.stop()
    batch = pb.BatchCreateJobsRequest(request_id="batch-down", specs=[spec(), spec()])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.BatchCreateJobs(batch, metadata=ACME)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert list((await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)).jobs) == []


async def test_lease_complete_and_fencing(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    [task] = await poll(stack)
    assert task.lease.job_id == job.job_id
    assert task.lease.attempt == 1
    assert task.tenant_id == "acme"
    result = job_result_pb2.JobResult(
        outputs=struct_pb2.Struct(fields={"title": struct_pb2.Value(string_value="Example")})
    )
    done = wpb.CompleteTaskRequest(
        worker_id="w1", completions=[wpb.TaskCompletion(lease=task.lease, result=result)]
    )
    await stack.worker.CompleteTask(done)
    finished = await wait_state(stack, job.job_id, job_pb2.JOB_STATE_SUCCEEDED)
    assert finished.result.outputs["title"] == "Example"
    assert [a.outcome for a in finished.attempts] == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
    again = await stack.worker.CompleteTask(done)  # never completed twice
    assert list(again.stale_leases) == [task.lease]
    assert (await wait_state(stack, job.job_id, job_pb2.JOB_STATE_SUCCEEDED)).version == 3


async def test_a_stale_lease_in_a_batch_is_refused_alone(stack) -> None:  # type: ignore[no-untyped-def]
    jobs = [(await create(stack)).job for _ in range(3)]
    first = await poll(stack, n=1, lease_seconds=1)
    await wait_state(stack, first[0].lease.job_id, job_pb2.JOB_STATE_QUEUED)  # lease expired
    fresh = await poll(stack, n=3)
    assert {t.lease.job_id for t in fresh} == {j.job_id for j in jobs}
    stale = first[0].lease
    batch = [wpb.TaskCompletion(lease=stale)] + [wpb.TaskCompletion(lease=t.lease) for t in fresh]
    done = await stack.worker.CompleteTask(
        wpb.CompleteTaskRequest(worker_id="w1", completions=batch)
    )
    assert list(done.stale_leases) == [stale]
    for job in jobs:
        finished = await wait_state(stack, job.job_id, job_pb2.JOB_STATE_SUCCEEDED)
        assert finished.state == job_pb2.JOB_STATE_SUCCEEDED
        assert finished.attempts[-1].outcome == job_pb2.ATTEMPT_OUTCOME_SUCCEEDED


async def test_priority_orders_leases(stack) -> None:  # type: ignore[no-untyped-def]
    low = (await create(stack, spec(priority=1))).job
    high = (await create(stack, spec(priority=900))).job
    tasks = await poll(stack, n=2)
    assert [t.lease.job_id for t in tasks] == [high.job_id, low.job_id]


async def test_retryable_failure_requeues_then_dead_letters(stack) -> None:  # type: ignore[no-untyped-def]
    retry = job_spec_pb2.RetryPolicy(max_attempts=2, initial_backoff=duration_pb2.Duration(nanos=1))
    job = (await create(stack, spec(retry_policy=retry))).job
    [task] = await poll(stack)
    failed = await stack.worker.FailTask(
        wpb.FailTaskRequest(
            worker_id="w1",
            lease=task.lease,
            error_code="HTTP_ERROR",
            error_message="refused",
            retryable=True,
        )
    )
    assert failed.next_state == job_pb2.JOB_STATE_FAILED
    await wait_state(stack, job.job_id, job_pb2.JOB_STATE_QUEUED)
    [second] = await poll(stack, wait=5)
    assert second.lease.attempt == 2
    final = await stack.worker.FailTask(
        wpb.FailTaskRequest(
            worker_id="w1", lease=second.lease, error_code="HTTP_ERROR", retryable=True
        )
    )
    assert final.next_state == job_pb2.JOB_STATE_DEAD_LETTER
    dead = (await stack.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=ACME)).job
    assert [a.error_code for a in dead.attempts] == ["HTTP_ERROR", "HTTP_ERROR"]
    again = await stack.jobs.RetryJob(pb.RetryJobRequest(job_id=job.job_id), metadata=ACME)
    assert again.job.state == job_pb2.JOB_STATE_QUEUED
    assert (await poll(stack))[0].lease.attempt == 3


async def test_expired_lease_is_retried_and_old_attempt_fenced(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    [task] = await poll(stack, lease_seconds=1)
    await wait_state(stack, job.job_id, job_pb2.JOB_STATE_QUEUED)
    expired = (await stack.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=ACME)).job
    assert expired.attempts[0].outcome == job_pb2.ATTEMPT_OUTCOME_LEASE_EXPIRED
    late = await stack.worker.CompleteTask(
        wpb.CompleteTaskRequest(worker_id="w1", completions=[wpb.TaskCompletion(lease=task.lease)])
    )
    assert list(late.stale_leases) == [task.lease]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.worker.FailTask(
            wpb.FailTaskRequest(
                worker_id="w1", lease=task.lease, error_code="TIMEOUT", retryable=True
            )
        )
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert task.lease.job_id in status_details(err.value)[1]["stale_leases"]


async def test_a_retried_cancel_or_retry_gives_the_first_answer_once(stack) -> None:  # type: ignore[no-untyped-def]
    """The same request_id: the first answer and one state change; another job under it is
    ALREADY_EXISTS; without one, the repeat is an illegal transition."""
    job = (await create(stack)).job
    cancel = pb.CancelJobRequest(job_id=job.job_id, reason="stop", request_id="c1")
    first = (await stack.jobs.CancelJob(cancel, metadata=ACME)).job
    again = (await stack.jobs.CancelJob(cancel, metadata=ACME)).job
    assert first.state == job_pb2.JOB_STATE_CANCELLED
    assert again == first
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=ACME)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    other = (await create(stack)).job
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.CancelJob(
            pb.CancelJobRequest(job_id=other.job_id, reason="stop", request_id="c1"),
            metadata=ACME,
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    [task] = await poll(stack)
    await stack.worker.FailTask(
        wpb.FailTaskRequest(worker_id="w1", lease=task.lease, error_code="HTTP_ERROR")
    )
    retry = pb.RetryJobRequest(job_id=other.job_id, request_id="r1")
    retried = (await stack.jobs.RetryJob(retry, metadata=ACME)).job
    assert retried.state == job_pb2.JOB_STATE_QUEUED
    assert (await stack.jobs.RetryJob(retry, metadata=ACME)).job == retried
    current = (await stack.jobs.GetJob(pb.GetJobRequest(job_id=other.job_id), metadata=ACME)).job
    assert current.version == retried.version  # one retry, not two
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.RetryJob(pb.RetryJobRequest(job_id=other.job_id), metadata=ACME)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancel_reaches_running_lease(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    [task] = await poll(stack)
    cancelled = await stack.jobs.CancelJob(
        pb.CancelJobRequest(job_id=job.job_id, reason="stop"), metadata=ACME
    )
    assert cancelled.job.state == job_pb2.JOB_STATE_CANCELLED
    beat = await stack.worker.Heartbeat(wpb.HeartbeatRequest(worker_id="w1", leases=[task.lease]))
    assert list(beat.cancelled) == [task.lease]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.jobs.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=ACME)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_heartbeat_extends_and_reports_lost(stack) -> None:  # type: ignore[no-untyped-def]
    await create(stack)
    [task] = await poll(stack)
    beat = await stack.worker.Heartbeat(
        wpb.HeartbeatRequest(
            worker_id="w1", leases=[task.lease, wpb.LeaseRef(job_id=task.lease.job_id, attempt=7)]
        )
    )
    assert list(beat.lost) == [wpb.LeaseRef(job_id=task.lease.job_id, attempt=7)]
    assert list(beat.cancelled) == []


async def test_watch_streams_changes_and_resumes(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    [task] = await poll(stack)
    await stack.worker.CompleteTask(
        wpb.CompleteTaskRequest(worker_id="w1", completions=[wpb.TaskCompletion(lease=task.lease)])
    )
    replies = [
        r async for r in stack.jobs.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=ACME)
    ]
    seen = [r.change for r in replies]
    # Each change comes with the job as it was then, not as it ended.
    assert [(r.job.state, r.job.version) for r in replies] == [(c.state, c.version) for c in seen]
    assert [len(r.job.attempts) for r in replies] == [0, 1, 1]
    assert not replies[1].job.attempts[0].HasField("finish_time")
    assert [r.job.HasField("finish_time") for r in replies] == [False, False, True]
    assert [c.state for c in seen] == [
        job_pb2.JOB_STATE_QUEUED,
        job_pb2.JOB_STATE_RUNNING,
        job_pb2.JOB_STATE_SUCCEEDED,
    ]
    assert [c.version for c in seen] == [1, 2, 3]
    resumed = [
        r.change.version
        async for r in stack.jobs.WatchJob(
            pb.WatchJobRequest(job_id=job.job_id, after_version=2), metadata=ACME
        )
    ]
    assert resumed == [3]


async def test_list_pages_and_filters(stack) -> None:  # type: ignore[no-untyped-def]
    ids = [(await create(stack)).job.job_id for _ in range(5)]
    await create(stack, spec("https://evil.test/"))
    seen: list[str] = []
    token = ""
    states = [job_pb2.JOB_STATE_QUEUED]
    while True:
        page = await stack.jobs.ListJobs(
            pb.ListJobsRequest(page_size=2, page_token=token, states=states), metadata=ACME
        )
        seen += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    first = await stack.jobs.ListJobs(pb.ListJobsRequest(page_size=2, states=states), metadata=ACME)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a token is bound to its filters
        await stack.jobs.ListJobs(
            pb.ListJobsRequest(page_size=2, page_token=first.next_page_token), metadata=ACME
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_tenants_are_isolated(stack) -> None:  # type: ignore[no-untyped-def]
    job = (await create(stack)).job
    other = as_tenant("other")
    for call in (
        stack.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=other),
        stack.jobs.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=other),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert list((await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=other)).jobs) == []
    same_id = await create(stack, request_id=job.request_id, md=other)  # request ids are per tenant
    assert same_id.created


async def test_a_tenant_token_cannot_lease_work(stack) -> None:  # type: ignore[no-untyped-def]
    """The queue spans tenants: leasing needs a service token, even with the `worker` scope."""
    job = (await create(stack)).job
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.worker.PollTasks(
            wpb.PollTasksRequest(worker_id="w1", max_tasks=10), metadata=ACME
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert job.job_id in {t.lease.job_id for t in await poll(stack)}


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("CreateJob", pb.CreateJobRequest(spec=spec()), "request_id"),
        ("CreateJob", pb.CreateJobRequest(request_id="has space", spec=spec()), "request_id"),
        ("CreateJob", pb.CreateJobRequest(request_id="r"), "spec"),
        (
            "CreateJob",
            pb.CreateJobRequest(
                request_id="r", spec=job_spec_pb2.JobSpec(engine=job_spec_pb2.ENGINE_HTTP)
            ),
            "spec.steps",
        ),
        (
            "CreateJob",
            pb.CreateJobRequest(
                request_id="r",
                spec=job_spec_pb2.JobSpec(
                    steps=[
                        job_spec_pb2.Step(
                            request=job_spec_pb2.RequestStep(url="https://example.com/")
                        )
                    ]
                ),
            ),
            "spec.engine",
        ),
        (
            "CreateJob",
            pb.CreateJobRequest(request_id="r", spec=spec("ftp://example.com/")),
            "spec.steps[0].request.url",
        ),
        (
            "CreateJob",
            pb.CreateJobRequest(request_id="r", spec=spec(priority=5000)),
            "spec.priority",
        ),
        (
            "CreateJob",
            pb.CreateJobRequest(
                request_id="r", spec=job_spec_pb2.JobSpec(engine=1, steps=[job_spec_pb2.Step()])
            ),
            "spec.steps[0].action",
        ),
        ("GetJob", pb.GetJobRequest(job_id="nope"), "job_id"),
        ("ListJobs", pb.ListJobsRequest(page_size=-1), "page_size"),
        ("ListJobs", pb.ListJobsRequest(page_token="%%%"), "page_token"),
        ("CancelJob", pb.CancelJobRequest(job_id=""), "job_id"),
        ("RetryJob", pb.RetryJobRequest(job_id="x"), "job_id"),
        ("BatchCreateJobs", pb.BatchCreateJobsRequest(request_id="b"), "specs"),
        ("BatchCreateJobs", pb.BatchCreateJobsRequest(specs=[spec()]), "request_id"),
    ],
)
async def test_invalid_job_requests(stack, method: str, request_, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stack.jobs, method)(request_, metadata=ACME)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in status_details(err.value)[0]
    assert list((await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)).jobs) == []


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [
        ("PollTasks", wpb.PollTasksRequest(max_tasks=1), "worker_id"),
        ("PollTasks", wpb.PollTasksRequest(worker_id="w", max_tasks=0), "max_tasks"),
        (
            "PollTasks",
            wpb.PollTasksRequest(
                worker_id="w", max_tasks=1, wait=duration_pb2.Duration(seconds=600)
            ),
            "wait",
        ),
        ("CompleteTask", wpb.CompleteTaskRequest(worker_id="w"), "completions"),
        ("FailTask", wpb.FailTaskRequest(worker_id="w", error_code="TIMEOUT"), "lease"),
        (  # not a FailureCode: the executor's codes are the contract's closed set
            "FailTask",
            wpb.FailTaskRequest(
                worker_id="w",
                lease=wpb.LeaseRef(job_id=str(uuid.uuid4()), attempt=1),
                error_code="HTTP_STATUS",
            ),
            "error_code",
        ),
        (
            "FailTask",
            wpb.FailTaskRequest(
                worker_id="w", lease=wpb.LeaseRef(job_id=str(uuid.uuid4()), attempt=1)
            ),
            "error_code",
        ),
        (
            "Heartbeat",
            wpb.HeartbeatRequest(worker_id="w", leases=[wpb.LeaseRef(job_id="x")]),
            "leases[0].job_id",
        ),
    ],
)
async def test_invalid_worker_requests(stack, method: str, request_, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stack.worker, method)(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in status_details(err.value)[0]
