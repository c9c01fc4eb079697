"""The executors' side of the queue: leasing, heartbeats, fenced reports, lease expiry, and
retention of finished jobs.

Every lease is one attempt of one job; a report for an attempt that is no longer current is
refused, so a job never completes twice. Each step takes a whole batch in one transaction:
the domain decides every transition, the store writes them with set-based SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord.orchestrator.v1 import worker_service_pb2
from accord_kit import metrics, tracing
from accord_kit.errors import Aborted
from accord_orchestrator import history, store, telemetry
from accord_orchestrator.domain import jobs as rules
from accord_orchestrator.domain.pollers import Pollers

log = structlog.get_logger("accord.queue")
DEFAULT_LEASE = timedelta(seconds=30)
ALL_ENGINES: list[int] = [job_spec_pb2.ENGINE_HTTP, job_spec_pb2.ENGINE_BROWSER]
# Specs in one PollTasks response: half the 16 MiB message limit, twice the largest spec.
MAX_LEASE_BYTES = 8 * 1024 * 1024
REAP_BATCH = 500
# The default cutoff when finished jobs are kept forever: older than anything finished.
KEEP_FOREVER = datetime(1, 1, 1, tzinfo=UTC)
# A queued job says no executor takes its engine once none has asked for it this long.
STRANDED_AFTER_SECONDS = 60.0


STRANDED = Gauge(
    "accord_orchestrator_engine_without_executor",
    "1 while executors poll this replica but none for this engine: its jobs wait queued",
    ["engine"],
)


def watch_stranded(pollers: Pollers) -> None:
    """Expose, per engine, whether its queued jobs are waiting for an executor to exist."""

    def probe(engine: int) -> Callable[[], float]:
        return lambda: float(pollers.stranded(engine, time.monotonic()))

    for engine in ALL_ENGINES:
        name = job_spec_pb2.Engine.Name(job_spec_pb2.Engine.ValueType(engine))
        STRANDED.labels(name.removeprefix("ENGINE_").lower()).set_function(probe(engine))


class QueueUseCases:
    def __init__(
        self, engine: AsyncEngine, poll_interval: float = 0.1, pollers: Pollers | None = None
    ) -> None:
        self._engine = engine
        self._poll_interval = poll_interval
        self._work = asyncio.Event()
        self.pollers = pollers or Pollers(STRANDED_AFTER_SECONDS)

    def notify(self) -> None:
        """Wake long polls in this process; other replicas find the work on their next poll."""
        self._work.set()

    async def poll(
        self, worker: str, limit: int, engines: list[int], wait: timedelta, lease: timedelta
    ) -> list[worker_service_pb2.Task]:
        deadline = asyncio.get_running_loop().time() + wait.total_seconds()
        self.pollers.polled(list(engines) or ALL_ENGINES, time.monotonic())
        while True:
            self._work.clear()
            tasks = await self._lease_undelivered_or_return(
                worker, limit, list(engines) or ALL_ENGINES, lease or DEFAULT_LEASE
            )
            remaining = deadline - asyncio.get_running_loop().time()
            if tasks or remaining <= 0:
                return tasks
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, self._poll_interval)):
                    await self._work.wait()

    async def _lease_undelivered_or_return(
        self, worker: str, limit: int, engines: list[int], length: timedelta
    ) -> list[worker_service_pb2.Task]:
        """Lease a batch; if the call is cancelled meanwhile, the leases go back at once.

        The transaction is shielded so a cancellation cannot leave its outcome unknown.
        """
        leasing = asyncio.ensure_future(self._lease(worker, limit, engines, length))
        try:
            return await asyncio.shield(leasing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                tasks = await leasing
                if tasks:
                    await asyncio.shield(self._release(worker, tasks))
            raise

    async def _lease(
        self, worker: str, limit: int, engines: list[int], length: timedelta
    ) -> list[worker_service_pb2.Task]:
        now = store.utcnow()
        async with self._engine.begin() as s:
            offered = await store.candidates(s, engines, now, limit)
            if not offered:
                return []
            keys = {(c.job.tenant_id, c.job.concurrency_key) for c in offered}
            running = await store.running_per_key(s, {k for k in keys if k[1]})
            chosen = rules.choose(offered, running, limit, MAX_LEASE_BYTES)
            transitions = [rules.lease(job, worker, now + length, now) for job in chosen]
            await history.commit(s, transitions)
            specs = await store.specs(s, [job.job_id for job in chosen])
        telemetry.observe(transitions)
        return [_task(tr.job, specs[tr.job.job_id]) for tr in transitions]

    async def _release(self, worker: str, tasks: list[worker_service_pb2.Task]) -> None:
        now = store.utcnow()
        leases = [rules.Lease(x.lease.job_id, x.lease.attempt) for x in tasks]
        async with self._engine.begin() as s:
            jobs = await store.lock(s, [x.job_id for x in leases])
            back = [
                rules.release(jobs[x.job_id], now)
                for x in leases
                if rules.holds(jobs.get(x.job_id), worker, x)
            ]
            await history.commit(s, back)
        log.info("queue.leases_returned", worker=worker, count=len(back))
        self.notify()

    async def heartbeat(
        self, worker: str, leases: list[rules.Lease], length: timedelta
    ) -> tuple[list[rules.Lease], list[rules.Lease], datetime]:
        deadline = store.utcnow() + (length or DEFAULT_LEASE)
        async with self._engine.begin() as s:
            extended, cancelled = await store.held_leases(s, worker, leases, deadline)
        lost = [x for x in leases if x not in extended and x not in cancelled]
        return sorted(cancelled, key=_order), lost, deadline

    async def complete(
        self, worker: str, completions: list[tuple[rules.Lease, job_result_pb2.JobResult]]
    ) -> list[rules.Lease]:
        """Apply every completion whose lease is still held; returns the stale ones."""
        now = store.utcnow()
        async with self._engine.begin() as s:
            jobs = await store.lock(s, [lease.job_id for lease, _ in completions])
            done, stale = [], []
            for lease, result in completions:
                job = jobs.get(lease.job_id)
                if job is None or not rules.holds(job, worker, lease):
                    stale.append(lease)
                    continue
                transition = rules.complete(job, now, result.SerializeToString())
                jobs[lease.job_id] = transition.job  # a lease repeated in the batch is stale
                done.append(transition)
            await history.commit(s, done)
        telemetry.observe(done)
        return stale

    async def fail(
        self,
        worker: str,
        lease: rules.Lease,
        code: str,
        message: str,
        retryable: bool,
        partial: job_result_pb2.JobResult,
    ) -> tuple[int, datetime | None]:
        now = store.utcnow()
        async with self._engine.begin() as s:
            job = (await store.lock(s, [lease.job_id])).get(lease.job_id)
            if not rules.holds(job, worker, lease):
                raise Aborted(
                    "lease is no longer held; drop the work",
                    metadata={"stale_leases": f"{lease.job_id}#{lease.attempt}"},
                )
            assert job is not None
            spec = (await store.specs(s, [lease.job_id]))[lease.job_id]
            transition = rules.fail(
                job,
                now,
                code,
                message,
                retryable=retryable,
                policy=spec.retry_policy,
                result=partial.SerializeToString(),
            )
            await history.commit(s, [transition])
        telemetry.observe([transition])
        after = transition.job
        return after.state, after.due_time if after.state == rules.FAILED else None

    async def reap(self, limit: int = REAP_BATCH) -> int:
        """Fail attempts whose lease expired and queue retries that fell due; returns count."""
        now = store.utcnow()
        async with self._engine.begin() as s:
            lost = await store.expired(s, now, limit)
            specs = await store.specs(s, [job.job_id for job in lost])
            expired = [rules.expire(job, now, specs[job.job_id].retry_policy) for job in lost]
            due = [rules.requeue(job, now) for job in await store.due_retries(s, now, limit)]
            await history.commit(s, expired + due)
        telemetry.observe(expired)
        metrics.RETRIES.labels("backoff").inc(len(due))
        if due:
            self.notify()
        return len(expired) + len(due)

    async def prune(
        self,
        retention: timedelta | None,
        batch: int,
        tenants: Mapping[str, timedelta] | None = None,
    ) -> int:
        """Delete jobs finished longer ago than their tenant's retention in `tenants`, or
        `retention` (None: forever) for a tenant not listed, a small batch per transaction."""
        total = 0
        while True:
            now = store.utcnow()
            cutoffs = {tenant: now - kept for tenant, kept in (tenants or {}).items()}
            default = now - retention if retention is not None else KEEP_FOREVER
            async with self._engine.begin() as s:
                gone = await store.prune(s, default, batch, cutoffs)
            total += gone
            if gone < batch:
                return total

    async def run_every(self, interval: float, step: Callable[[], Awaitable[int]]) -> None:
        """Run a housekeeping step forever; a failed pass is logged and tried again."""
        while True:
            try:
                await step()
            except Exception as exc:
                log.warning("queue.housekeeping_failed", step=step.__name__, error=repr(exc))
            await asyncio.sleep(interval)


def _order(lease: rules.Lease) -> tuple[str, int]:
    return (lease.job_id, lease.attempt)


def _task(job: rules.Job, spec: job_spec_pb2.JobSpec) -> worker_service_pb2.Task:
    task = worker_service_pb2.Task(
        lease=worker_service_pb2.LeaseRef(job_id=job.job_id, attempt=job.attempt),
        tenant_id=job.tenant_id,
        spec=spec,
        traceparent=tracing.mark("job.lease", job.traceparent, telemetry.attributes(job)),
    )
    assert job.lease_deadline is not None
    task.lease_deadline_time.FromDatetime(job.lease_deadline)
    return task
