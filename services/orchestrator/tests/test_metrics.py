"""The queue's work metrics move as jobs go through it, read from the metrics endpoint.

A test worker drives the queue through generated stubs: one lease runs out (an expiration
and a retry after backoff), one attempt succeeds, one fails for good, and RetryJob queues
that one again. Counters are process-wide, so each check compares before and after.
"""

from __future__ import annotations

import uuid

from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord.orchestrator.v1 import worker_service_pb2 as wpb
from accord_kit.testing import as_tenant, eventually, sample, scrape

ACME = as_tenant("acme")


def spec(attempts: int) -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_HTTP,
        steps=[js.Step(request=js.RequestStep(url="https://example.com/"))],
        retry_policy=js.RetryPolicy(
            max_attempts=attempts, initial_backoff=duration_pb2.Duration(nanos=10_000_000)
        ),
    )


async def poll(stack, lease_seconds: int = 30) -> list[wpb.Task]:  # type: ignore[no-untyped-def]
    request = wpb.PollTasksRequest(
        worker_id="w1",
        max_tasks=10,
        lease_duration=duration_pb2.Duration(seconds=lease_seconds),
    )
    return list((await stack.worker.PollTasks(request)).tasks)


async def state(stack, job_id: str) -> int:  # type: ignore[no-untyped-def]
    got = await stack.jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=ACME)
    return got.job.state


async def test_queue_metrics_follow_leases_expiry_retries_and_outcomes(stack) -> None:  # type: ignore[no-untyped-def]
    port = stack.app.server.metrics_port
    before = await scrape(port)
    created = await stack.jobs.CreateJob(
        pb.CreateJobRequest(request_id=uuid.uuid4().hex, spec=spec(3)), metadata=ACME
    )
    job_id = created.job.job_id

    async def queued_counted() -> float | None:
        found = sample(await scrape(port), "accord_queue_jobs", state="queued", engine="http")
        return found if found >= 1 else None

    assert await eventually(queued_counted, what="the queued job counted") == 1

    # A lease of one second that is never heartbeaten runs out; the retry falls due.
    assert [t.lease.job_id for t in await poll(stack, lease_seconds=1)] == [job_id]

    async def requeued() -> bool | None:
        return True if await state(stack, job_id) == job_pb2.JOB_STATE_QUEUED else None

    await eventually(requeued, what="the expired attempt's retry")
    (task,) = await poll(stack)
    assert task.lease.attempt == 2
    await stack.worker.FailTask(
        wpb.FailTaskRequest(
            worker_id="w1", lease=task.lease, error_code="ASSERTION_FAILED", retryable=False
        )
    )
    assert await state(stack, job_id) == job_pb2.JOB_STATE_DEAD_LETTER
    await stack.jobs.RetryJob(pb.RetryJobRequest(job_id=job_id), metadata=ACME)
    (task,) = await poll(stack)
    await stack.worker.CompleteTask(
        wpb.CompleteTaskRequest(worker_id="w1", completions=[wpb.TaskCompletion(lease=task.lease)])
    )
    assert await state(stack, job_id) == job_pb2.JOB_STATE_SUCCEEDED

    after = await scrape(port)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("accord_job_lease_expirations_total") == 1
    assert moved("accord_job_retries_total", cause="backoff") == 1
    assert moved("accord_job_retries_total", cause="manual") == 1
    assert moved("accord_job_start_delay_seconds_count") == 3
    assert moved("accord_job_outcomes_total", state="failed", code="LEASE_EXPIRED") == 1
    assert moved("accord_job_outcomes_total", state="dead_letter", code="ASSERTION_FAILED") == 1
    assert moved("accord_job_outcomes_total", state="succeeded", code="NONE") == 1
    assert sample(after, "accord_job_outcomes_total", job_id=job_id) == 0  # never a label

    async def drained() -> float | None:
        samples = await scrape(port)
        queued = sample(samples, "accord_queue_jobs", state="queued")
        # The relay's last pass saw its outbox empty.
        return (
            0.0
            if queued == 0 and sample(samples, "accord_outbox_oldest_age_seconds") == 0
            else None
        )

    assert await eventually(drained, what="an empty queue and outbox in the metrics") == 0
