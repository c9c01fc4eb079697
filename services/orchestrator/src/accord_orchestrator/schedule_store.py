"""SQL for schedules and their actions: rows in, `Stored` schedules and protos out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from accord.orchestrator.v1 import schedule_pb2
from accord_orchestrator import tables as t
from accord_orchestrator.domain import schedules as rules

S = t.schedules.c
A = t.schedule_actions.c


@dataclass(frozen=True)
class Stored:
    """A schedule as stored: its definition and its firing state."""

    schedule: schedule_pb2.Schedule  # the definition, without server-computed fields
    state: rules.State
    paused: bool
    pause_note: str
    due_time: datetime | None
    etag: str
    body_hash: str
    create_time: datetime
    update_time: datetime

    @property
    def schedule_id(self) -> str:
        return self.state.schedule_id


def _stored(row: Row[Any]) -> Stored:
    return Stored(
        schedule=schedule_pb2.Schedule.FromString(row.body),
        state=rules.State(
            row.schedule_id, row.tenant_id, row.next_time, row.buffered_time, row.last_job_id
        ),
        paused=row.paused,
        pause_note=row.pause_note,
        due_time=row.due_time,
        etag=row.etag,
        body_hash=row.body_hash,
        create_time=row.create_time,
        update_time=row.update_time,
    )


async def insert_schedule(s: AsyncConnection, row: dict[str, Any]) -> None:
    await s.execute(insert(t.schedules), [row])


async def get(
    s: AsyncConnection, tenant: str, schedule_id: str, *, lock: bool = False
) -> Stored | None:
    stmt = select(t.schedules).where(S.tenant_id == tenant, S.schedule_id == schedule_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (await s.execute(stmt)).one_or_none()
    return None if row is None else _stored(row)


async def by_request(s: AsyncConnection, tenant: str, request_id: str) -> Stored | None:
    stmt = select(t.schedules).where(S.tenant_id == tenant, S.request_id == request_id)
    row = (await s.execute(stmt)).one_or_none()
    return None if row is None else _stored(row)


async def name_taken(s: AsyncConnection, tenant: str, name: str, other_than: str = "") -> bool:
    stmt = select(S.schedule_id).where(
        S.tenant_id == tenant, S.display_name == name, S.schedule_id != other_than
    )
    return (await s.execute(stmt.limit(1))).first() is not None


async def list_schedules(
    s: AsyncConnection,
    tenant: str,
    paused: bool | None,
    labels: dict[str, str],
    before: list[str] | None,
    limit: int,
) -> list[Stored]:
    stmt = select(t.schedules).where(S.tenant_id == tenant)
    if paused is not None:
        stmt = stmt.where(S.paused == paused)
    if labels:
        stmt = stmt.where(S.labels.contains(labels))
    if before is not None:
        when = datetime.fromisoformat(before[0])
        stmt = stmt.where(
            or_(S.create_time < when, and_(S.create_time == when, S.schedule_id < before[1]))
        )
    stmt = stmt.order_by(S.create_time.desc(), S.schedule_id.desc()).limit(limit)
    return [_stored(r) for r in (await s.execute(stmt)).all()]


async def save(s: AsyncConnection, schedule_id: str, **values: Any) -> None:
    await s.execute(update(t.schedules).where(S.schedule_id == schedule_id).values(**values))


async def save_many(s: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Firing state of many schedules in one statement (executemany of one UPDATE)."""
    if not rows:
        return
    stmt = (
        update(t.schedules)
        .where(S.schedule_id == bindparam("key"))
        .values(
            next_time=bindparam("next_time"),
            due_time=bindparam("due_time"),
            buffered_time=bindparam("buffered_time"),
            last_job_id=bindparam("last_job_id"),
        )
    )
    await s.execute(stmt, list(rows))


async def delete_schedule(s: AsyncConnection, schedule_id: str) -> None:
    await s.execute(delete(t.schedule_actions).where(A.schedule_id == schedule_id))
    await s.execute(delete(t.schedules).where(S.schedule_id == schedule_id))


async def claim_due(s: AsyncConnection, now: datetime, limit: int) -> list[Stored]:
    """Due schedules no other replica holds, locked for this transaction."""
    stmt = (
        select(t.schedules)
        .where(~S.paused, S.due_time.is_not(None), S.due_time <= now)
        .order_by(S.due_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_stored(r) for r in (await s.execute(stmt)).all()]


async def earliest_due(s: AsyncConnection, besides: Sequence[str] = ()) -> datetime | None:
    """When the next schedule is due (an index lookup, whatever the number of schedules),
    other than `besides`."""
    stmt = select(func.min(S.due_time)).where(~S.paused, S.due_time.is_not(None))
    if besides:
        stmt = stmt.where(S.schedule_id.not_in(list(besides)))
    found: datetime | None = (await s.execute(stmt)).scalar()
    return found


async def job_states(s: AsyncConnection, job_ids: Sequence[str]) -> dict[str, int]:
    ids = [j for j in set(job_ids) if j]
    if not ids:
        return {}
    jobs = t.jobs.c
    rows = (await s.execute(select(jobs.job_id, jobs.state).where(jobs.job_id.in_(ids)))).all()
    return {r.job_id: r.state for r in rows}


async def insert_actions(s: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await s.execute(insert(t.schedule_actions), rows)


async def recent_actions(
    s: AsyncConnection, schedule_ids: Sequence[str], count: int
) -> dict[str, list[schedule_pb2.ScheduleAction]]:
    """The newest `count` actions of each schedule, newest first."""
    if not schedule_ids:
        return {}
    ranked = (
        select(
            t.schedule_actions,
            func.row_number()
            .over(partition_by=A.schedule_id, order_by=A.action_id.desc())
            .label("rank"),
        )
        .where(A.schedule_id.in_(list(schedule_ids)))
        .subquery()
    )
    stmt = select(ranked).where(ranked.c.rank <= count).order_by(ranked.c.action_id.desc())
    found: dict[str, list[schedule_pb2.ScheduleAction]] = {}
    for r in (await s.execute(stmt)).all():
        found.setdefault(r.schedule_id, []).append(to_action(r))
    return found


def to_action(r: Any) -> schedule_pb2.ScheduleAction:
    action = schedule_pb2.ScheduleAction(
        job_id=r.job_id,
        skipped=r.skipped,
        note=r.note,
        job_state=r.job_state,
        fire_count=r.fire_count,
    )
    action.schedule_time.FromDatetime(r.schedule_time)
    action.fire_time.FromDatetime(r.fire_time)
    return action
