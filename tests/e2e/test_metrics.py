"""After a run of jobs through the four services as real processes, each work metric moves
on the endpoint of the service where the thing happens: admission and request decisions on
the policy service, starts, outcomes and schedule fires on the orchestrator, run times on
the executor, and audit lag on the audit service."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_pb2,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)
from accord_kit.testing import Samples, eventually, sample, scrape
from tests.e2e.suite import Suite
from tests.e2e.test_one_job import MD, allow_local_site
from tests.e2e.test_one_job import scrape as scrape_spec

pytestmark = pytest.mark.e2e
SERVICES = ("orchestrator", "policy", "executor", "audit")


def failing(url: str) -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_HTTP,
        steps=[
            js.Step(request=js.RequestStep(url=url)),
            js.Step(assertion=js.AssertStep(status=500)),
        ],
        retry_policy=js.RetryPolicy(max_attempts=1),
    )


async def _run(jobs: job_service_pb2_grpc.JobServiceStub, spec: js.JobSpec) -> job_pb2.Job:
    """Create a job and follow it to its end."""
    request = job_service_pb2.CreateJobRequest(request_id=uuid.uuid4().hex, spec=spec)
    job = (await jobs.CreateJob(request, metadata=MD)).job
    if job.state != job_pb2.JOB_STATE_REJECTED:
        watch = job_service_pb2.WatchJobRequest(job_id=job.job_id)
        async for _ in jobs.WatchJob(watch, metadata=MD, timeout=60):
            pass
    got = await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job.job_id), metadata=MD)
    return got.job


async def _fire_once(suite: Suite, spec: js.JobSpec) -> None:
    """A schedule every second, deleted after its first fire."""
    async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
        stub = schedule_service_pb2_grpc.ScheduleServiceStub(ch)
        made = await stub.CreateSchedule(
            schedule_service_pb2.CreateScheduleRequest(
                request_id=uuid.uuid4().hex,
                schedule=schedule_pb2.Schedule(
                    display_name="every second",
                    spec=schedule_pb2.ScheduleSpec(interval=duration_pb2.Duration(seconds=1)),
                    job_template=spec,
                ),
            ),
            metadata=MD,
        )
        sid = made.schedule.schedule_id

        async def fired() -> bool | None:
            got = await stub.GetSchedule(
                schedule_service_pb2.GetScheduleRequest(schedule_id=sid), metadata=MD
            )
            return True if any(a.job_id for a in got.schedule.recent_actions) else None

        await eventually(fired, 30, "the schedule's first fire")
        await stub.DeleteSchedule(
            schedule_service_pb2.DeleteScheduleRequest(schedule_id=sid), metadata=MD
        )


async def test_work_metrics_move_on_each_service(suite: Suite, site: str) -> None:
    ports = {name: suite.instance(name).metrics_port for name in SERVICES}
    await allow_local_site(suite.target("policy"))
    before = {name: await scrape(port) for name, port in ports.items()}
    async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
        jobs = job_service_pb2_grpc.JobServiceStub(ch)
        ok = await _run(jobs, scrape_spec(site))
        bad = await _run(jobs, failing(site))
        # Loopback, but not on the allow list: refused at admission, never fetched.
        denied = await _run(jobs, scrape_spec("http://127.0.0.2:9/"))
    assert ok.state == job_pb2.JOB_STATE_SUCCEEDED
    assert bad.state == job_pb2.JOB_STATE_DEAD_LETTER
    assert denied.state == job_pb2.JOB_STATE_REJECTED
    await _fire_once(suite, scrape_spec(site))

    async def now(name: str) -> Samples:
        return await scrape(ports[name])

    def moved(name: str, after: Samples, metric: str, **labels: str) -> float:
        return sample(after, metric, **labels) - sample(before[name], metric, **labels)

    orchestrator = await now("orchestrator")
    assert moved("orchestrator", orchestrator, "accord_job_start_delay_seconds_count") >= 2
    assert moved("orchestrator", orchestrator, "accord_job_outcomes_total", state="succeeded") >= 1
    assert (
        moved(
            "orchestrator",
            orchestrator,
            "accord_job_outcomes_total",
            state="dead_letter",
            code="ASSERTION_FAILED",
        )
        == 1
    )
    assert moved("orchestrator", orchestrator, "accord_schedule_fire_lag_seconds_count") >= 1

    executor = await now("executor")
    ran = "accord_job_run_seconds_count"
    assert moved("executor", executor, ran, engine="http", outcome="succeeded") >= 1
    assert moved("executor", executor, ran, engine="http", outcome="failed") == 1

    policy = await now("policy")
    decisions = "accord_policy_decisions_total"
    assert moved("policy", policy, decisions, kind="job", outcome="allow") >= 2
    assert (
        moved("policy", policy, decisions, kind="job", outcome="deny", reason="DOMAIN_NOT_ALLOWED")
        == 1
    )
    assert moved("policy", policy, decisions, kind="request", outcome="allow") >= 2

    async def audited() -> Samples | None:
        samples = await now("audit")
        lag = "accord_audit_lag_seconds_count"
        # queued, started and an end for each run job, queued for the fired one; decisions.
        enough = moved("audit", samples, lag, producer="orchestrator") >= 7
        return samples if enough and moved("audit", samples, lag, producer="policy") >= 3 else None

    await eventually(audited, 30, "audit lag observed for both producers' events")
    for name in ("orchestrator", "policy"):
        # The relay publishes as soon as it commits: nothing stays behind for long.
        age = sample(await now(name), "accord_outbox_oldest_age_seconds")
        assert 0 <= age < 30, (name, age)
