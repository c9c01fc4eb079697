"""The executors' side of the queue: leasing, heartbeats, fenced reports, lease expiry.

Every lease is one attempt of one job; reports carry the attempt number and a report for
an attempt that is no longer current is refused (ABORTED), so a job never completes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2, worker_service_pb2
from accord_kit.errors import Aborted
from accord_orchestrator import history, store
from accord_orchestrator.domain import jobs as rules

log = structlog.get_logger("accord.queue")
DEFAULT_LEASE = timedelta(seconds=30)
ALL_ENGINES: list[int] = [job_spec_pb2.ENGINE_HTTP, job_spec_pb2.ENGINE_BROWSER]
Lease = tuple[str, int]


class QueueUseCases:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], poll_interval: float = 0.1
    ) -> None:
        self._sessions = sessions
        self._poll_interval = poll_interval
        self._work = asyncio.Event()

    def notify(self) -> None:
        """Wake long polls in this process; other replicas find the work on their next poll."""
        self._work.set()

    async def poll(
        self, worker: str, limit: int, engines: list[int], wait: timedelta, lease: timedelta
    ) -> list[worker_service_pb2.Task]:
        deadline = asyncio.get_running_loop().time() + wait.total_seconds()
        while True:
            self._work.clear()
            wanted = list(engines) or ALL_ENGINES
            tasks = await self._lease(worker, limit, wanted, lease or DEFAULT_LEASE)
            remaining = deadline - asyncio.get_running_loop().time()
            if tasks or remaining <= 0:
                return tasks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), min(remaining, self._poll_interval))

    async def _lease(
        self, worker: str, limit: int, engines: list[int], length: timedelta
    ) -> list[worker_service_pb2.Task]:
        now = store.utcnow()
        async with self._sessions.begin() as s:
            rows = await store.lease(s, worker, limit, engines, now + length, now)
            if not rows:
                return []
            await store.insert_attempts(
                s,
                [
                    {
                        "job_id": r.job_id,
                        "number": r.attempt,
                        "worker_id": worker,
                        "start_time": now,
                        "outcome": job_pb2.ATTEMPT_OUTCOME_UNSPECIFIED,
                        "error_code": "",
                        "error_message": "",
                    }
                    for r in rows
                ],
            )
            await history.record(
                s,
                [
                    store.Change(
                        r.job_id,
                        r.tenant_id,
                        r.version,
                        rules.QUEUED,
                        rules.RUNNING,
                        r.attempt,
                        f"leased by {worker}",
                        now,
                    )
                    for r in rows
                ],
            )
        return [_task(r) for r in rows]

    async def heartbeat(
        self, worker: str, leases: list[Lease], length: timedelta
    ) -> tuple[list[Lease], list[Lease], datetime]:
        deadline = store.utcnow() + (length or DEFAULT_LEASE)
        async with self._sessions.begin() as s:
            extended = await store.extend_leases(s, worker, leases, deadline)
            cancelled = await store.cancelled_leases(s, [x for x in leases if x not in extended])
        lost = [x for x in leases if x not in extended and x not in cancelled]
        return sorted(cancelled), lost, deadline

    async def complete(
        self, worker: str, completions: list[tuple[Lease, job_result_pb2.JobResult]]
    ) -> None:
        async with self._sessions.begin() as s:
            rows = await store.lock_jobs(s, [lease[0] for lease, _ in completions])
            _fence(worker, rows, [lease for lease, _ in completions])
            now = store.utcnow()
            changes = []
            for (job_id, attempt), result in completions:
                row = rows[job_id]
                await store.finish_attempt(
                    s, job_id, attempt, job_pb2.ATTEMPT_OUTCOME_SUCCEEDED, now
                )
                await store.set_state(
                    s,
                    job_id,
                    row.version + 1,
                    state=rules.SUCCEEDED,
                    result=result.SerializeToString(),
                    lease_worker=None,
                    lease_deadline=None,
                    update_time=now,
                    finish_time=now,
                )
                changes.append(
                    store.Change(
                        job_id,
                        row.tenant_id,
                        row.version + 1,
                        rules.RUNNING,
                        rules.SUCCEEDED,
                        attempt,
                        "",
                        now,
                    )
                )
            await history.record(s, changes)

    async def fail(
        self,
        worker: str,
        lease: Lease,
        code: str,
        message: str,
        retryable: bool,
        partial: job_result_pb2.JobResult,
    ) -> tuple[int, datetime | None]:
        async with self._sessions.begin() as s:
            rows = await store.lock_jobs(s, [lease[0]])
            _fence(worker, rows, [lease])
            now = store.utcnow()
            await store.finish_attempt(
                s, lease[0], lease[1], job_pb2.ATTEMPT_OUTCOME_FAILED, now, code, message
            )
            return await _after_failure(
                s,
                rows[lease[0]],
                retryable,
                f"{code}: {message}",
                now,
                result=partial.SerializeToString(),
            )

    async def reap(self, limit: int = 500) -> int:
        """Fail attempts whose lease expired and queue retries that fell due; returns count."""
        now = store.utcnow()
        async with self._sessions.begin() as s:
            expired = await store.expired(s, now, limit)
            for row in expired:
                await store.finish_attempt(
                    s,
                    row.job_id,
                    row.attempt,
                    job_pb2.ATTEMPT_OUTCOME_LEASE_EXPIRED,
                    now,
                    "LEASE_EXPIRED",
                    "no heartbeat before the deadline",
                )
                await _after_failure(s, row, True, "LEASE_EXPIRED: executor lost", now)
            due = await store.due_retries(s, now, limit)
            for row in due:
                await store.set_state(
                    s, row.job_id, row.version + 1, state=rules.QUEUED, update_time=now
                )
            await history.record(
                s,
                [
                    store.Change(
                        r.job_id,
                        r.tenant_id,
                        r.version + 1,
                        rules.FAILED,
                        rules.QUEUED,
                        r.attempt,
                        "retry due",
                        now,
                    )
                    for r in due
                ],
            )
        if due:
            self.notify()
        return len(expired) + len(due)

    async def run_reaper(self, interval: float) -> None:
        while True:
            try:
                await self.reap()
            except Exception as exc:
                log.warning("queue.reap_failed", error=repr(exc))
            await asyncio.sleep(interval)


async def _after_failure(
    s: AsyncSession, row: Any, retryable: bool, message: str, now: datetime, **values: Any
) -> tuple[int, datetime | None]:
    spec = job_spec_pb2.JobSpec.FromString(row.spec)
    retry = retryable and row.attempt < row.attempt_limit
    state = rules.FAILED if retry else rules.DEAD_LETTER
    due = now + rules.backoff(spec, row.attempt) if retry else None
    await store.set_state(
        s,
        row.job_id,
        row.version + 1,
        state=state,
        status_message=message,
        lease_worker=None,
        lease_deadline=None,
        update_time=now,
        due_time=due or row.due_time,
        finish_time=None if retry else now,
        **values,
    )
    await history.record(
        s,
        [
            store.Change(
                row.job_id,
                row.tenant_id,
                row.version + 1,
                rules.RUNNING,
                state,
                row.attempt,
                message,
                now,
            )
        ],
    )
    return state, due


def _fence(worker: str, rows: dict[str, Any], leases: list[Lease]) -> None:
    stale = [
        f"{job_id}#{attempt}"
        for job_id, attempt in leases
        if job_id not in rows
        or rows[job_id].state != rules.RUNNING
        or rows[job_id].attempt != attempt
        or rows[job_id].lease_worker != worker
    ]
    if stale:
        raise Aborted(
            "lease is no longer held; drop the work", metadata={"stale_leases": ",".join(stale)}
        )


def _task(row: Any) -> worker_service_pb2.Task:
    task = worker_service_pb2.Task(
        lease=worker_service_pb2.LeaseRef(job_id=row.job_id, attempt=row.attempt),
        tenant_id=row.tenant_id,
        spec=job_spec_pb2.JobSpec.FromString(row.spec),
    )
    task.lease_deadline_time.FromDatetime(row.lease_deadline)
    return task
