"""SQL for jobs, attempts and state changes; rows in, protos and domain records out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as rules

J = t.jobs.c


@dataclass(frozen=True)
class Change:
    """One state change to record: a `changes` row and an outbox event."""

    job_id: str
    tenant_id: str
    version: int
    previous_state: int
    state: int
    attempt: int
    message: str
    time: datetime


def to_job(row: Row[Any], attempts: Sequence[Row[Any]] = ()) -> job_pb2.Job:
    job = job_pb2.Job(
        job_id=row.job_id,
        tenant_id=row.tenant_id,
        request_id=row.request_id,
        spec=job_spec_pb2.JobSpec.FromString(row.spec),
        state=row.state,
        status_message=row.status_message,
        schedule_id=row.schedule_id,
        version=row.version,
    )
    if row.decision:
        job.decision.ParseFromString(row.decision)
    if row.result:
        job.result.ParseFromString(row.result)
    job.create_time.FromDatetime(row.create_time)
    job.update_time.FromDatetime(row.update_time)
    job.due_time.FromDatetime(row.due_time)
    if row.finish_time:
        job.finish_time.FromDatetime(row.finish_time)
    for a in attempts:
        attempt = job.attempts.add(
            number=a.number,
            worker_id=a.worker_id,
            outcome=a.outcome,
            error_code=a.error_code,
            error_message=a.error_message,
        )
        attempt.start_time.FromDatetime(a.start_time)
        if a.finish_time:
            attempt.finish_time.FromDatetime(a.finish_time)
    return job


async def insert_job(s: AsyncSession, **values: Any) -> None:
    await s.execute(insert(t.jobs).values(**values))


async def find_by_requests(
    s: AsyncSession, tenant: str, request_ids: list[str]
) -> dict[str, Row[Any]]:
    stmt = select(t.jobs).where(J.tenant_id == tenant, J.request_id.in_(request_ids))
    return {r.request_id: r for r in (await s.execute(stmt)).all()}


async def get_row(
    s: AsyncSession, tenant: str, job_id: str, *, lock: bool = False
) -> Row[Any] | None:
    stmt = select(t.jobs).where(J.tenant_id == tenant, J.job_id == job_id)
    return (await s.execute(stmt.with_for_update() if lock else stmt)).one_or_none()


async def load_job(s: AsyncSession, row: Row[Any]) -> job_pb2.Job:
    stmt = select(t.attempts).where(t.attempts.c.job_id == row.job_id).order_by(t.attempts.c.number)
    return to_job(row, (await s.execute(stmt)).all())


async def list_jobs(
    s: AsyncSession, tenant: str, filters: dict[str, Any], before: list[str] | None, limit: int
) -> list[job_pb2.Job]:
    stmt = select(t.jobs).where(J.tenant_id == tenant)
    if filters["states"]:
        stmt = stmt.where(J.state.in_(filters["states"]))
    if filters["schedule_id"]:
        stmt = stmt.where(J.schedule_id == filters["schedule_id"])
    if filters["engine"]:
        stmt = stmt.where(J.engine == filters["engine"])
    if filters["after"]:
        stmt = stmt.where(J.create_time >= datetime.fromisoformat(filters["after"]))
    if filters["before"]:
        stmt = stmt.where(J.create_time < datetime.fromisoformat(filters["before"]))
    if before is not None:
        when = datetime.fromisoformat(before[0])
        stmt = stmt.where(
            or_(J.create_time < when, and_(J.create_time == when, J.job_id < before[1]))
        )
    stmt = stmt.order_by(J.create_time.desc(), J.job_id.desc()).limit(limit)
    rows = (await s.execute(stmt)).all()
    ids = [r.job_id for r in rows]
    attempt_rows = (
        await s.execute(
            select(t.attempts)
            .where(t.attempts.c.job_id.in_(ids))
            .order_by(t.attempts.c.job_id, t.attempts.c.number)
        )
    ).all()
    by_job: dict[str, list[Row[Any]]] = {}
    for a in attempt_rows:
        by_job.setdefault(a.job_id, []).append(a)
    return [to_job(r, by_job.get(r.job_id, [])) for r in rows]


async def set_state(s: AsyncSession, job_id: str, version: int, **values: Any) -> None:
    await s.execute(update(t.jobs).where(J.job_id == job_id).values(version=version, **values))


async def insert_changes(s: AsyncSession, changes: Sequence[Change]) -> None:
    if changes:
        await s.execute(
            insert(t.changes),
            [
                {
                    "job_id": c.job_id,
                    "version": c.version,
                    "previous_state": c.previous_state,
                    "state": c.state,
                    "change_time": c.time,
                    "attempt": c.attempt,
                    "message": c.message,
                }
                for c in changes
            ],
        )


async def changes_after(s: AsyncSession, job_id: str, version: int) -> list[Row[Any]]:
    stmt = (
        select(t.changes)
        .where(t.changes.c.job_id == job_id, t.changes.c.version > version)
        .order_by(t.changes.c.version)
    )
    return list((await s.execute(stmt)).all())


async def lease(
    s: AsyncSession, worker: str, limit: int, engines: list[int], deadline: datetime, now: datetime
) -> list[Row[Any]]:
    """Take up to `limit` due QUEUED jobs, highest priority first, skipping locked rows."""
    due = (
        select(J.job_id)
        .where(J.state == rules.QUEUED, J.due_time <= now, J.engine.in_(engines))
        .order_by(J.priority.desc(), J.due_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(t.jobs)
        .where(J.job_id.in_(due.scalar_subquery()))
        .values(
            state=rules.RUNNING,
            attempt=J.attempt + 1,
            lease_worker=worker,
            lease_deadline=deadline,
            version=J.version + 1,
            update_time=now,
        )
        .returning(t.jobs)
    )
    rows = (await s.execute(stmt)).all()
    return sorted(rows, key=lambda r: (-r.priority, r.due_time))  # RETURNING has no order


async def insert_attempts(s: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await s.execute(insert(t.attempts), rows)


async def finish_attempt(
    s: AsyncSession,
    job_id: str,
    number: int,
    outcome: int,
    now: datetime,
    code: str = "",
    message: str = "",
) -> None:
    await s.execute(
        update(t.attempts)
        .where(t.attempts.c.job_id == job_id, t.attempts.c.number == number)
        .values(finish_time=now, outcome=outcome, error_code=code, error_message=message)
    )


async def lock_jobs(s: AsyncSession, job_ids: list[str]) -> dict[str, Row[Any]]:
    stmt = select(t.jobs).where(J.job_id.in_(job_ids)).order_by(J.job_id).with_for_update()
    return {r.job_id: r for r in (await s.execute(stmt)).all()}


async def extend_leases(
    s: AsyncSession, worker: str, leases: list[tuple[str, int]], deadline: datetime
) -> set[tuple[str, int]]:
    """Extend the leases still held by `worker`; returns those extended."""
    if not leases:
        return set()
    held = or_(*(and_(J.job_id == j, J.attempt == a) for j, a in leases))
    stmt = (
        update(t.jobs)
        .where(held, J.state == rules.RUNNING, J.lease_worker == worker)
        .values(lease_deadline=deadline)
        .returning(J.job_id, J.attempt)
    )
    return {(r.job_id, r.attempt) for r in (await s.execute(stmt)).all()}


async def cancelled_leases(s: AsyncSession, leases: list[tuple[str, int]]) -> set[tuple[str, int]]:
    if not leases:
        return set()
    held = or_(*(and_(J.job_id == j, J.attempt == a) for j, a in leases))
    stmt = select(J.job_id, J.attempt).where(held, J.state == rules.CANCELLED)
    return {(r.job_id, r.attempt) for r in (await s.execute(stmt)).all()}


async def expired(s: AsyncSession, now: datetime, limit: int) -> list[Row[Any]]:
    stmt = (
        select(t.jobs)
        .where(J.state == rules.RUNNING, J.lease_deadline < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await s.execute(stmt)).all())


async def due_retries(s: AsyncSession, now: datetime, limit: int) -> list[Row[Any]]:
    stmt = (
        select(t.jobs)
        .where(J.state == rules.FAILED, J.due_time <= now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await s.execute(stmt)).all())


def utcnow() -> datetime:
    return datetime.now(UTC)
