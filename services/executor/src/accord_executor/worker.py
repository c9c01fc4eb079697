"""The work loop: lease tasks from WorkerService, run them, keep leases alive, report.

Leases are polled only for engines this executor can run, up to its free capacity plus a
small local buffer, and extended by heartbeats every third of the lease. A cancelled job
stops as soon as its `job.cancelled` event arrives over NATS; heartbeats catch whatever
that misses, and lost leases stop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import structlog
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord.events.v1 import envelope_pb2, job_events_pb2
from accord.orchestrator.v1 import worker_service_pb2 as w
from accord.orchestrator.v1 import worker_service_pb2_grpc
from accord_executor.config import Settings
from accord_executor.domain import results as r
from accord_executor.engines.http import Outcome, Runner
from accord_executor.pools import Engine, Pools
from accord_executor.reports import RPC_TIMEOUT_SECONDS, Reporter, describe
from accord_kit import metrics, tracing
from accord_kit.auth import DEFAULT_TENANT
from accord_kit.backoff import Backoff
from accord_kit.server import Check

log = structlog.get_logger("accord.executor.worker")

POLL_ERRORS = Counter("accord_executor_poll_errors_total", "PollTasks calls that failed")
TASKS = Counter("accord_executor_tasks_total", "Leased tasks by how they ended", ["outcome"])

LeaseKey = tuple[str, int]

MAX_HEARTBEAT_LEASES = 1000
CANCELLED_SUBJECT = "accord.orchestrator.v1.job.cancelled"
# Running tasks that outlive the drain window get this long to report EXECUTOR_SHUTDOWN.
SHUTDOWN_REPORT_SECONDS = 5.0
# Reconnect quickly after an orchestrator restart; gRPC's default backoff reaches 2 min.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def key(lease: w.LeaseRef) -> LeaseKey:
    return (lease.job_id, lease.attempt)


def orchestrator_check(channel: grpc.aio.Channel) -> Check:
    """Healthy while the orchestrator's channel is connected or connects.

    A channel in TRANSIENT_FAILURE fails at once rather than waiting out the probe's
    timeout: the connection was just refused, and polls fail the same way meanwhile.
    """

    async def check() -> None:
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                raise ConnectionError("the orchestrator is unreachable")
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)

    return check


@dataclass
class _Held:
    """A lease this worker holds, and the engine run doing its work."""

    task: w.Task
    run: asyncio.Task[Outcome] | None = None
    dropped: bool = False

    @property
    def tenant(self) -> str:
        return self.task.tenant_id or DEFAULT_TENANT


class Worker:
    def __init__(
        self,
        settings: Settings,
        channel: grpc.aio.Channel,
        engines: Mapping[Engine, Runner],
        pools: Pools,
    ) -> None:
        self._settings = settings
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self._engines = engines
        self._pools = pools
        self._held: dict[LeaseKey, _Held] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self._reports = Reporter(self._stub, settings.worker_id)
        self._lease = duration_pb2.Duration()
        self._lease.FromMilliseconds(int(settings.lease_seconds * 1000))
        self._loops: list[asyncio.Task[None]] = []
        self._cancellations: Subscription | None = None

    @property
    def engines(self) -> list[Engine]:
        """The engines this executor asks work for: those it has and can run here."""
        return [e for e in self._pools.runnable() if e in self._engines]

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._poll_loop(), name="worker-poll"),
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._reports.run(), name="worker-report"),
        ]

    async def stop(self, drain_seconds: float) -> None:
        """Stop polling; let running tasks finish and report within the drain window."""
        self._pools.drain()
        if not self._loops:
            return
        await _cancel(self._loops[0])  # an in-flight poll's leases expire and are re-leased
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=drain_seconds)
        for held in list(self._held.values()):
            if held.run is not None:
                held.run.cancel()  # reported as EXECUTOR_SHUTDOWN, so it is retried soon
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=SHUTDOWN_REPORT_SECONDS)
        for job in list(self._jobs):
            await _cancel(job)
        for loop in self._loops[1:]:
            await _cancel(loop)
        if self._cancellations is not None:
            with contextlib.suppress(Exception):
                await self._cancellations.unsubscribe()
        log.info("worker.stopped", unreported=len(self._held))

    async def _poll_loop(self) -> None:
        engines = self.engines
        if not engines:
            log.warning("worker.no_engines", pools=str(self._pools.status()))
            return
        wait = duration_pb2.Duration()
        wait.FromMilliseconds(int(self._settings.poll_wait_seconds * 1000))
        backoff = Backoff()
        while True:
            room = await self._pools.wait_room(engines, self._settings.prefetch)
            request = w.PollTasksRequest(
                worker_id=self._settings.worker_id,
                max_tasks=min(room, 1000),
                engines=engines,
                wait=wait,
                lease_duration=self._lease,
            )
            try:
                response = await self._stub.PollTasks(
                    request, timeout=self._settings.poll_wait_seconds + RPC_TIMEOUT_SECONDS
                )
            except Exception as exc:  # the loop outlives any one failed poll
                POLL_ERRORS.inc()
                delay = backoff.next()
                log.warning("worker.poll_failed", error=describe(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            for task in response.tasks:
                self._spawn(task)

    def _spawn(self, task: w.Task) -> None:
        held = _Held(task)
        self._held[key(task.lease)] = held
        counted = self._pools.get(task.spec.engine) is not None
        if counted:
            self._pools.buffered += 1  # synchronous, so the next poll already sees it
        job = asyncio.create_task(self._execute(held, counted), name=f"job-{task.lease.job_id}")
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _execute(self, held: _Held, counted: bool) -> None:
        """The attempt in its job's trace; every line it logs names the job (its own task)."""
        lease = held.task.lease
        attrs = {"accord.job_id": lease.job_id, "accord.attempt": lease.attempt}
        with (
            structlog.contextvars.bound_contextvars(job_id=lease.job_id),
            tracing.span("job.execute", parent=held.task.traceparent, attributes=attrs),
        ):
            await self._execute_traced(held, counted)

    async def _execute_traced(self, held: _Held, counted: bool) -> None:
        lease = held.task.lease
        bound = log.bind(job_id=lease.job_id, attempt=lease.attempt, tenant=held.tenant)
        started = False
        try:
            if counted:
                try:
                    started = await self._pools.take(held.task.spec.engine)
                finally:
                    self._pools.buffered -= 1
            begun = time.perf_counter()
            outcome = await self._run(held) if started or not counted else _not_started()
            TASKS.labels(_ended(outcome)).inc()
            _observe_run(held.task.spec.engine, outcome, time.perf_counter() - begun)
            if outcome is None:
                bound.info("worker.task_dropped")
            elif outcome.failure is None:
                await self._reports.complete(held.tenant, lease, outcome.result)
            else:
                await self._reports.fail(held.tenant, lease, outcome.failure, outcome.result)
        except Exception:
            bound.exception("worker.task_crashed")
        finally:
            self._held.pop(key(lease), None)
            if started:
                self._pools.release(held.task.spec.engine)

    async def _run(self, held: _Held) -> Outcome | None:
        """The engine's outcome; None when the lease was cancelled or lost meanwhile."""
        if held.dropped:  # cancelled while it waited in the buffer
            return None
        engine = self._engines.get(held.task.spec.engine)
        if engine is None:
            failure = r.Failure(r.ENGINE_UNAVAILABLE, "this executor cannot run the job's engine")
            return Outcome(job_result_pb2.JobResult(), failure)
        # Every request is checked with the policy, for the job's tenant, where it is made.
        held.run = asyncio.create_task(
            engine.run(held.task.spec, tenant=held.tenant, job_id=held.task.lease.job_id)
        )
        try:
            return await held.run
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this task itself is being cancelled, not only the engine run
            if held.dropped:
                return None
            failure = r.Failure(r.EXECUTOR_SHUTDOWN, "the executor shut down mid-attempt")
            return Outcome(job_result_pb2.JobResult(), failure)
        except Exception as exc:
            log.exception("worker.engine_error", job_id=held.task.lease.job_id)
            return Outcome(job_result_pb2.JobResult(), r.Failure(r.EXECUTOR_ERROR, repr(exc)))

    async def _heartbeat_loop(self) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            leases = [h.task.lease for h in self._held.values() if not h.dropped]
            for start in range(0, len(leases), MAX_HEARTBEAT_LEASES):
                await self._heartbeat(leases[start : start + MAX_HEARTBEAT_LEASES], interval)

    async def _heartbeat(self, leases: list[w.LeaseRef], timeout: float) -> None:
        # Worker-scoped, not on one task's behalf: the leases may belong to many tenants.
        request = w.HeartbeatRequest(
            worker_id=self._settings.worker_id, leases=leases, lease_duration=self._lease
        )
        try:
            response = await self._stub.Heartbeat(request, timeout=timeout)
        except Exception as exc:  # the next beat retries; a lease lasts three intervals
            log.warning("worker.heartbeat_failed", error=describe(exc))
            return
        for lease in response.cancelled:
            self._drop(lease, "cancelled")
        for lease in response.lost:
            self._drop(lease, "lost")

    async def follow_cancellations(self, nc: Client) -> None:
        """Stop a cancelled job's run the moment the orchestrator publishes it."""

        async def on_cancelled(msg: Msg) -> None:
            try:
                envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
                changed = job_events_pb2.JobStateChanged()
                envelope.payload.Unpack(changed)
            except (DecodeError, ValueError):
                log.warning("worker.bad_cancel_event", subject=msg.subject)
                return
            lease = w.LeaseRef(job_id=changed.job_id, attempt=changed.change.attempt)
            self._drop(lease, "cancelled")

        self._cancellations = await nc.subscribe(CANCELLED_SUBJECT, cb=on_cancelled)

    def _drop(self, lease: w.LeaseRef, why: str) -> None:
        held = self._held.get(key(lease))
        if held is None or held.dropped:
            return
        log.info("worker.lease_" + why, job_id=lease.job_id, attempt=lease.attempt)
        held.dropped = True
        if held.run is not None:
            held.run.cancel()


def _observe_run(engine: int, outcome: Outcome | None, seconds: float) -> None:
    name = job_spec_pb2.Engine.Name(engine).removeprefix("ENGINE_").lower()  # type: ignore[arg-type]
    metrics.RUN_SECONDS.labels(name, _ended(outcome)).observe(seconds)


def _not_started() -> Outcome:
    failure = r.Failure(r.EXECUTOR_SHUTDOWN, "the executor shut down before the job started")
    return Outcome(job_result_pb2.JobResult(), failure)


def _ended(outcome: Outcome | None) -> str:
    if outcome is None:
        return "dropped"
    return "succeeded" if outcome.failure is None else "failed"


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
