"""The work loop against a small in-test WorkerService: a real gRPC server, not a mock.

The servicer hands out the tasks a test queues and records every report with the tenant
it was made for; tests wait on those records through a condition, never by sleeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import duration_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from accord.common.v1 import job_spec_pb2 as js
from accord.events.v1 import job_events_pb2
from accord.orchestrator.v1 import job_pb2, worker_service_pb2_grpc
from accord.orchestrator.v1 import worker_service_pb2 as w
from accord_executor.app import App
from accord_executor.config import Settings
from accord_executor.domain import results as r
from accord_kit import events
from accord_kit.auth import TENANT_METADATA
from accord_kit.testing import channel

Ctx = grpc.aio.ServicerContext[Any, Any]
SettingsFor = Callable[..., Settings]
WAIT = 10.0
CAPACITY, PREFETCH = 4, 2


def tenant_of(context: Ctx) -> str:
    """The tenant the executor reported for, from the call's metadata."""
    return dict(context.invocation_metadata() or ()).get(TENANT_METADATA, "")


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll executor-side state with a deadline; it has no event to wait on."""
    async with asyncio.timeout(timeout):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


class FakeOrchestrator(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[w.Task] = asyncio.Queue()
        self.polls: list[w.PollTasksRequest] = []
        self.completed: list[tuple[str, w.TaskCompletion]] = []
        self.complete_calls = 0
        self.failed: list[tuple[str, w.FailTaskRequest]] = []
        self.heartbeats: list[w.HeartbeatRequest] = []
        self.cancelled: set[str] = set()
        self.stale: set[str] = set()
        self.unavailable_reports = 0
        self._changed = asyncio.Condition()

    def hand_out(self, spec: js.JobSpec, tenant: str = "acme", traceparent: str = "") -> w.Task:
        task = w.Task(
            lease=w.LeaseRef(job_id=str(uuid.uuid4()), attempt=1),
            tenant_id=tenant,
            spec=spec,
            traceparent=traceparent,
        )
        self.queue.put_nowait(task)
        return task

    async def until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def _record(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def PollTasks(  # noqa: N802 - the generated RPC name
        self, request: w.PollTasksRequest, context: Ctx
    ) -> w.PollTasksResponse:
        self.polls.append(request)
        await self._record()
        tasks: list[w.Task] = []
        try:
            async with asyncio.timeout(request.wait.ToTimedelta().total_seconds()):
                tasks.append(await self.queue.get())
        except TimeoutError:
            return w.PollTasksResponse()
        while len(tasks) < request.max_tasks and not self.queue.empty():
            tasks.append(self.queue.get_nowait())
        return w.PollTasksResponse(tasks=tasks)

    async def Heartbeat(  # noqa: N802 - the generated RPC name
        self, request: w.HeartbeatRequest, context: Ctx
    ) -> w.HeartbeatResponse:
        self.heartbeats.append(request)
        await self._record()
        return w.HeartbeatResponse(
            cancelled=[lease for lease in request.leases if lease.job_id in self.cancelled]
        )

    async def CompleteTask(  # noqa: N802 - the generated RPC name
        self, request: w.CompleteTaskRequest, context: Ctx
    ) -> w.CompleteTaskResponse:
        self.complete_calls += 1
        if self.unavailable_reports > 0:
            self.unavailable_reports -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "orchestrator restarting")
        stale = [c.lease for c in request.completions if c.lease.job_id in self.stale]
        self.completed += [
            (tenant_of(context), c) for c in request.completions if c.lease not in stale
        ]
        await self._record()
        return w.CompleteTaskResponse(stale_leases=stale)

    async def FailTask(  # noqa: N802 - the generated RPC name
        self, request: w.FailTaskRequest, context: Ctx
    ) -> w.FailTaskResponse:
        self.failed.append((tenant_of(context), request))
        await self._record()
        return w.FailTaskResponse()

    def completed_ids(self) -> set[str]:
        return {c.lease.job_id for _, c in self.completed}


@pytest.fixture
async def orchestrator() -> AsyncIterator[tuple[FakeOrchestrator, int]]:
    fake = FakeOrchestrator()
    server = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, port
    await server.stop(None)


@pytest.fixture
async def worker_app(
    orchestrator: tuple[FakeOrchestrator, int], executor_settings: SettingsFor
) -> AsyncIterator[App]:
    app = App(executor_settings(orchestrator[1], lease_seconds=1.5, prefetch=PREFETCH))
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
def fake(orchestrator: tuple[FakeOrchestrator, int], worker_app: App) -> FakeOrchestrator:
    return orchestrator[0]


def page(url: str, **fields: Any) -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_HTTP,
        steps=[
            js.Step(request=js.RequestStep(url=url)),
            js.Step(name="title", extract=js.ExtractStep(selector="title")),
        ],
        **fields,
    )


async def test_completes_a_task_for_its_tenant(fake: FakeOrchestrator, site) -> None:  # type: ignore[no-untyped-def]
    task = fake.hand_out(page(f"{site.url}/"), tenant="acme")
    await fake.until(lambda: len(fake.completed) == 1)
    tenant, completion = fake.completed[0]
    assert tenant == "acme"
    assert completion.lease == task.lease
    assert json_format.MessageToDict(completion.result.outputs) == {"title": "Accord Test Site"}
    assert len(completion.result.steps) == 2
    poll = fake.polls[0]
    assert poll.worker_id == "test-worker"
    assert list(poll.engines) == [js.ENGINE_HTTP]  # no browser here, so none is asked for
    assert poll.max_tasks == CAPACITY + PREFETCH  # a free executor asks for a buffer too
    assert poll.lease_duration.ToMilliseconds() == 1500
    assert fake.failed == []


async def test_reports_failures_with_code_and_partial_result(fake: FakeOrchestrator, site) -> None:  # type: ignore[no-untyped-def]
    spec = page(f"{site.url}/status/500")
    spec.steps.append(js.Step(assertion=js.AssertStep(status=200)))
    task = fake.hand_out(spec, tenant="globex")
    await fake.until(lambda: len(fake.failed) == 1)
    tenant, failure = fake.failed[0]
    assert tenant == "globex"
    assert failure.lease == task.lease
    assert failure.error_code == r.ASSERTION_FAILED
    assert not failure.retryable
    assert "got 500" in failure.error_message
    assert len(failure.partial_result.steps) == 3
    assert fake.completed == []


async def test_connection_errors_are_reported_retryable(
    fake: FakeOrchestrator, closed_port: int
) -> None:
    # An internal job, whose policy waives robots.txt (unreachable here, so it would deny).
    internal = js.AUTHORIZATION_MODE_INTERNAL
    fake.hand_out(page(f"http://127.0.0.1:{closed_port}/", authorization_mode=internal))
    await fake.until(lambda: len(fake.failed) == 1)
    assert fake.failed[0][1].error_code == r.HTTP_ERROR, fake.failed[0][1].error_message
    assert fake.failed[0][1].retryable


async def test_batches_completions_by_tenant(fake: FakeOrchestrator, site) -> None:  # type: ignore[no-untyped-def]
    tasks = [fake.hand_out(page(f"{site.url}/"), tenant=t) for t in ("acme", "acme", "globex")]
    await fake.until(lambda: len(fake.completed) == 3)
    assert {(t, c.lease.job_id) for t, c in fake.completed} == {
        ("acme", tasks[0].lease.job_id),
        ("acme", tasks[1].lease.job_id),
        ("globex", tasks[2].lease.job_id),
    }


async def test_stale_leases_are_dropped_and_the_rest_reported(  # type: ignore[no-untyped-def]
    fake: FakeOrchestrator, site
) -> None:
    stale = fake.hand_out(page(f"{site.url}/"))
    fake.stale.add(stale.lease.job_id)
    live = fake.hand_out(page(f"{site.url}/"))
    await fake.until(lambda: live.lease.job_id in fake.completed_ids())
    later = fake.hand_out(page(f"{site.url}/about"))
    await fake.until(lambda: later.lease.job_id in fake.completed_ids())
    assert stale.lease.job_id not in fake.completed_ids()


async def test_retries_reports_while_the_orchestrator_is_unavailable(  # type: ignore[no-untyped-def]
    fake: FakeOrchestrator, site
) -> None:
    fake.unavailable_reports = 2
    task = fake.hand_out(page(f"{site.url}/"))
    await fake.until(lambda: task.lease.job_id in fake.completed_ids())
    assert fake.complete_calls == 3


async def test_heartbeats_extend_leases_and_stop_cancelled_tasks(  # type: ignore[no-untyped-def]
    fake: FakeOrchestrator, worker_app: App, site
) -> None:
    task = fake.hand_out(
        js.JobSpec(
            engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url=f"{site.url}/slow"))]
        )
    )
    await asyncio.wait_for(site.slow_started.wait(), WAIT)
    await fake.until(lambda: any(task.lease in h.leases for h in fake.heartbeats))
    assert fake.heartbeats[0].lease_duration.ToMilliseconds() == 1500
    fake.cancelled.add(task.lease.job_id)
    http = worker_app.pools.get(js.ENGINE_HTTP)
    assert http is not None
    await eventually(lambda: http.in_flight == 0 and http.completed_total == 1)
    assert fake.completed == []
    assert fake.failed == []


async def test_stop_lets_running_tasks_finish_and_report(  # type: ignore[no-untyped-def]
    orchestrator: tuple[FakeOrchestrator, int], executor_settings: SettingsFor, site
) -> None:
    fake, port = orchestrator
    app = App(executor_settings(port))
    await app.start()
    task = fake.hand_out(page(f"{site.url}/slow"))
    await asyncio.wait_for(site.slow_started.wait(), WAIT)
    stopping = asyncio.create_task(app.stop())
    await eventually(lambda: app.pools.draining)
    site.release.set()
    await asyncio.wait_for(stopping, WAIT)
    assert fake.failed == [], fake.failed
    assert fake.completed_ids() == {task.lease.job_id}


async def test_executor_is_healthy_when_the_orchestrator_is_reachable(worker_app: App) -> None:
    async with channel(worker_app.port) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        async with asyncio.timeout(WAIT):
            while True:
                response = await health.Check(health_pb2.HealthCheckRequest(service=""))
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_keeps_polling_until_the_orchestrator_comes_up(  # type: ignore[no-untyped-def]
    closed_port: int, executor_settings: SettingsFor, site
) -> None:
    def poll_errors() -> float:
        return REGISTRY.get_sample_value("accord_executor_poll_errors_total") or 0.0

    failed_before = poll_errors()
    app = App(executor_settings(closed_port))
    await app.start()
    await eventually(lambda: poll_errors() > failed_before)
    fake = FakeOrchestrator()
    server = grpc.aio.server()
    try:
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
        assert server.add_insecure_port(f"127.0.0.1:{closed_port}") == closed_port
        await server.start()
        task = fake.hand_out(page(f"{site.url}/"))
        await fake.until(lambda: task.lease.job_id in fake.completed_ids(), timeout=20)
    finally:
        await app.stop()
        await server.stop(None)


async def test_buffered_tasks_wait_for_a_slot_and_all_run(
    fake: FakeOrchestrator, worker_app: App
) -> None:
    """More leased than slots: the rest wait in the local buffer, never beyond capacity."""
    pause = js.Step(wait_for=js.WaitForStep(delay=duration_pb2.Duration(nanos=200_000_000)))
    tasks = [fake.hand_out(js.JobSpec(engine=js.ENGINE_HTTP, steps=[pause])) for _ in range(6)]
    http = worker_app.pools.get(js.ENGINE_HTTP)
    assert http is not None
    peak = 0

    def done() -> bool:
        nonlocal peak
        peak = max(peak, http.in_flight)
        return len(fake.completed) == len(tasks)

    await eventually(done)
    assert fake.completed_ids() == {t.lease.job_id for t in tasks}
    assert 1 <= peak <= CAPACITY
    assert worker_app.pools.buffered == 0


async def test_a_cancelled_event_stops_the_run_at_once(  # type: ignore[no-untyped-def]
    fake: FakeOrchestrator, worker_app: App, nats_url: str, site
) -> None:
    """The job.cancelled event stops a running job long before any heartbeat would."""
    task = fake.hand_out(page(f"{site.url}/slow"))
    await asyncio.wait_for(site.slow_started.wait(), WAIT)
    http = worker_app.pools.get(js.ENGINE_HTTP)
    assert http is not None
    beats = len(fake.heartbeats)
    nc = await nats.connect(nats_url)
    try:
        change = job_pb2.JobStateChange(
            attempt=task.lease.attempt, state=job_pb2.JOB_STATE_CANCELLED
        )
        await nc.publish(
            "accord.orchestrator.v1.job.cancelled",
            events.envelope(
                producer="orchestrator",
                aggregate="job",
                event="cancelled",
                aggregate_id=task.lease.job_id,
                tenant_id="acme",
                payload=job_events_pb2.JobStateChanged(job_id=task.lease.job_id, change=change),
            ).SerializeToString(),
        )
        await eventually(lambda: http.in_flight == 0, timeout=1.0)
    finally:
        await nc.close()
    assert len(fake.heartbeats) == beats  # no heartbeat told it: the event did
    assert fake.completed == []
    assert fake.failed == []
