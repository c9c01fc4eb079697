"""A queued job whose engine no polling executor takes says so: on the job and as a metric."""

from __future__ import annotations

from prometheus_client import REGISTRY

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord.orchestrator.v1 import worker_service_pb2 as wpb
from accord_orchestrator.domain.pollers import Pollers

from .test_queue import ACME, create, get


def browser_job() -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_BROWSER,
        steps=[js.Step(request=js.RequestStep(url="https://example.com/"))],
    )


def stranded_metric(engine: str) -> float | None:
    return REGISTRY.get_sample_value(
        "accord_orchestrator_engine_without_executor", {"engine": engine}
    )


def test_an_engine_is_stranded_only_while_others_are_polled_without_it() -> None:
    pollers = Pollers(window_seconds=60)
    assert not pollers.stranded(js.ENGINE_BROWSER, now=0)  # nobody polls: nothing is known
    pollers.polled([js.ENGINE_HTTP], now=0)
    assert pollers.stranded(js.ENGINE_BROWSER, now=30)
    assert not pollers.stranded(js.ENGINE_HTTP, now=30)
    pollers.polled([js.ENGINE_HTTP, js.ENGINE_BROWSER], now=40)
    assert not pollers.stranded(js.ENGINE_BROWSER, now=41)
    assert not pollers.stranded(js.ENGINE_BROWSER, now=200)  # everyone went quiet


async def test_a_browser_job_no_executor_takes_says_so_while_it_waits(stack) -> None:  # type: ignore[no-untyped-def]
    job = await create(stack, browser_job())
    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert (await get(stack, job.job_id)).status_message == ""

    # An executor that runs HTTP jobs only polls: the browser job is not offered to it...
    http_only = wpb.PollTasksRequest(worker_id="w1", max_tasks=10, engines=[js.ENGINE_HTTP])
    assert list((await stack.worker.PollTasks(http_only)).tasks) == []
    # ...and now says why it waits, in GetJob and in ListJobs, and in the metric.
    waiting = await get(stack, job.job_id)
    assert waiting.state == job_pb2.JOB_STATE_QUEUED
    assert waiting.status_message == "waiting: no running executor takes ENGINE_BROWSER jobs"
    listed = await stack.jobs.ListJobs(pb.ListJobsRequest(), metadata=ACME)
    assert [j.status_message for j in listed.jobs] == [waiting.status_message]
    assert stranded_metric("browser") == 1.0
    assert stranded_metric("http") == 0.0

    # An executor with a browser polls: the job is leased and the message is gone.
    both = wpb.PollTasksRequest(worker_id="w2", max_tasks=10, engines=[js.ENGINE_BROWSER])
    [task] = (await stack.worker.PollTasks(both)).tasks
    assert task.lease.job_id == job.job_id
    running = await get(stack, job.job_id)
    assert running.state == job_pb2.JOB_STATE_RUNNING
    assert running.status_message == ""
    assert stranded_metric("browser") == 0.0
