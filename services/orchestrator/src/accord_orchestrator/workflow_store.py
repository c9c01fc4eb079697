"""SQL for workflows, their webhooks, judged jobs, results and deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as job_rules
from accord_orchestrator.domain.workflows import State

W = t.workflows.c
H = t.webhooks.c
J = t.workflow_jobs.c
R = t.workflow_results.c
D = t.deliveries.c
PENDING, DELIVERED, FAILED = (
    wsp.DELIVERY_STATE_PENDING,
    wsp.DELIVERY_STATE_DELIVERED,
    wsp.DELIVERY_STATE_FAILED,
)


@dataclass(frozen=True)
class Hook:
    """A webhook as stored: its secret still sealed."""

    webhook_id: str
    workflow_id: str
    tenant_id: str
    url: str
    kinds: list[int]
    sealed: bytes

    def view(self) -> wf.Webhook:
        return wf.Webhook(
            webhook_id=self.webhook_id,
            url=self.url,
            kinds=[wf.NotificationKind.ValueType(k) for k in self.kinds],
        )


@dataclass(frozen=True)
class Stored:
    """A workflow as stored: its definition (no secrets), state and webhooks."""

    workflow_id: str
    tenant_id: str
    body: wf.Workflow
    body_hash: str
    schedule_id: str
    state: State
    hooks: list[Hook]
    create_time: datetime
    update_time: datetime
    etag: str


def _hook(r: Row[Any]) -> Hook:
    return Hook(r.webhook_id, r.workflow_id, r.tenant_id, r.url, list(r.kinds), r.secret)


async def _with_hooks(s: AsyncConnection, rows: Sequence[Row[Any]]) -> list[Stored]:
    ids = [r.workflow_id for r in rows]
    hooks: dict[str, list[Hook]] = {}
    if ids:
        found = await s.execute(
            select(t.webhooks).where(H.workflow_id.in_(ids)).order_by(H.position)
        )
        for h in found.all():
            hooks.setdefault(h.workflow_id, []).append(_hook(h))
    return [
        Stored(
            r.workflow_id,
            r.tenant_id,
            wf.Workflow.FromString(r.body),
            r.body_hash,
            r.schedule_id,
            State.from_json(r.state),
            hooks.get(r.workflow_id, []),
            r.create_time,
            r.update_time,
            r.etag,
        )
        for r in rows
    ]


async def insert_workflow(
    s: AsyncConnection, row: dict[str, Any], hooks: Sequence[dict[str, Any]]
) -> None:
    await s.execute(insert(t.workflows), [row])
    if hooks:
        await s.execute(insert(t.webhooks), list(hooks))


async def get(
    s: AsyncConnection, tenant: str, workflow_id: str, *, lock: bool = False
) -> Stored | None:
    stmt = select(t.workflows).where(W.tenant_id == tenant, W.workflow_id == workflow_id)
    if lock:
        stmt = stmt.with_for_update()
    row = (await s.execute(stmt)).one_or_none()
    return None if row is None else (await _with_hooks(s, [row]))[0]


async def lock_free(s: AsyncConnection, workflow_id: str) -> Stored | None:
    """The workflow, locked, unless another transaction holds it (then None)."""
    stmt = select(t.workflows).where(W.workflow_id == workflow_id).with_for_update(skip_locked=True)
    row = (await s.execute(stmt)).one_or_none()
    return None if row is None else (await _with_hooks(s, [row]))[0]


async def by_request(s: AsyncConnection, tenant: str, request_id: str) -> Stored | None:
    stmt = select(t.workflows).where(W.tenant_id == tenant, W.request_id == request_id)
    row = (await s.execute(stmt)).one_or_none()
    return None if row is None else (await _with_hooks(s, [row]))[0]


async def name_taken(s: AsyncConnection, tenant: str, name: str) -> bool:
    stmt = select(W.workflow_id).where(W.tenant_id == tenant, W.display_name == name)
    return (await s.execute(stmt)).first() is not None


async def list_workflows(
    s: AsyncConnection, tenant: str, after: list[Any] | None, limit: int
) -> list[Stored]:
    stmt = select(t.workflows).where(W.tenant_id == tenant)
    if after is not None:
        when = datetime.fromisoformat(after[0])
        stmt = stmt.where(
            or_(W.create_time > when, and_(W.create_time == when, W.workflow_id > after[1]))
        )
    stmt = stmt.order_by(W.create_time, W.workflow_id).limit(limit)
    return await _with_hooks(s, (await s.execute(stmt)).all())


async def delete_workflow(s: AsyncConnection, workflow_id: str) -> None:
    for table, column in (
        (t.deliveries, D.workflow_id),
        (t.workflow_results, R.workflow_id),
        (t.workflow_jobs, J.workflow_id),
        (t.webhooks, H.workflow_id),
        (t.workflows, W.workflow_id),
    ):
        await s.execute(delete(table).where(column == workflow_id))


async def save_definition(
    s: AsyncConnection,
    workflow_id: str,
    values: dict[str, Any],
    hooks: Sequence[dict[str, Any]],
) -> None:
    """An update: the workflow's row and its webhooks replaced (the deliveries of those
    removed go with them)."""
    await s.execute(update(t.workflows).where(W.workflow_id == workflow_id).values(**values))
    kept = [h["webhook_id"] for h in hooks]
    await s.execute(
        delete(t.deliveries).where(D.workflow_id == workflow_id, D.webhook_id.not_in(kept))
    )
    await s.execute(delete(t.webhooks).where(H.workflow_id == workflow_id))
    if hooks:
        await s.execute(insert(t.webhooks), list(hooks))


async def save_state(s: AsyncConnection, workflow_id: str, state: State, now: datetime) -> None:
    await s.execute(
        update(t.workflows)
        .where(W.workflow_id == workflow_id)
        .values(state=state.to_json(), update_time=now)
    )


async def unjudged(s: AsyncConnection, since: datetime, limit: int) -> list[tuple[str, str]]:
    """(workflow id, job id) of jobs of workflows that ended after `since` and are not
    judged yet, oldest first."""
    jobs = t.jobs.c
    stmt = (
        select(W.workflow_id, jobs.job_id)
        .select_from(
            t.jobs.join(
                t.workflows,
                and_(W.tenant_id == jobs.tenant_id, W.schedule_id == jobs.schedule_id),
            )
        )
        .where(
            jobs.schedule_id != "",
            jobs.finish_time >= since,
            jobs.state.in_(sorted(job_rules.TERMINAL)),
            ~exists().where(J.job_id == jobs.job_id, J.judged),
        )
        .order_by(jobs.create_time, jobs.job_id)
        .limit(limit)
    )
    return [(r.workflow_id, r.job_id) for r in (await s.execute(stmt)).all()]


async def run_of(s: AsyncConnection, job_id: str) -> tuple[str, int, bool] | None:
    """(first job of its run, page number, judged) of a job a workflow knows of."""
    row = (
        await s.execute(select(J.first_job_id, J.page, J.judged).where(J.job_id == job_id))
    ).one_or_none()
    return None if row is None else (row.first_job_id, row.page, row.judged)


async def run_pages(s: AsyncConnection, first_job_id: str) -> list[str]:
    """The job ids of a run's pages after the first, in page order."""
    stmt = select(J.job_id).where(J.first_job_id == first_job_id, J.page > 1).order_by(J.page)
    return [r.job_id for r in (await s.execute(stmt)).all()]


async def note_job(
    s: AsyncConnection, job_id: str, workflow_id: str, first_job_id: str, page: int, judged: bool
) -> None:
    stmt = pg_insert(t.workflow_jobs).values(
        job_id=job_id, workflow_id=workflow_id, first_job_id=first_job_id, page=page, judged=judged
    )
    await s.execute(stmt.on_conflict_do_update(index_elements=[J.job_id], set_={"judged": judged}))


async def insert_result(s: AsyncConnection, row: dict[str, Any]) -> int:
    found = await s.execute(insert(t.workflow_results).returning(R.result_id), [row])
    return int(found.scalar_one())


async def save_result_body(s: AsyncConnection, result_id: int, body: bytes) -> None:
    await s.execute(update(t.workflow_results).where(R.result_id == result_id).values(body=body))


async def list_results(
    s: AsyncConnection, workflow_id: str, before: int | None, limit: int
) -> list[wf.WorkflowResult]:
    stmt = select(R.body).where(R.workflow_id == workflow_id)
    if before is not None:
        stmt = stmt.where(R.result_id < before)
    stmt = stmt.order_by(R.result_id.desc()).limit(limit)
    return [wf.WorkflowResult.FromString(r.body) for r in (await s.execute(stmt)).all()]


async def insert_deliveries(s: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await s.execute(insert(t.deliveries), list(rows))


async def delivery(s: AsyncConnection, delivery_id: str) -> Row[Any] | None:
    stmt = select(t.deliveries).where(D.delivery_id == delivery_id)
    return (await s.execute(stmt)).one_or_none()


async def delivery_by_request(
    s: AsyncConnection, webhook_id: str, request_id: str
) -> Row[Any] | None:
    stmt = select(t.deliveries).where(D.webhook_id == webhook_id, D.request_id == request_id)
    return (await s.execute(stmt)).one_or_none()


async def claim_deliveries(
    s: AsyncConnection, now: datetime, until: datetime, limit: int
) -> list[Row[Any]]:
    """Pending deliveries that are due, held (their next attempt moved to `until`) so that
    no other replica sends them meanwhile."""
    due = (
        select(D.delivery_id)
        .where(D.state == PENDING, D.next_time <= now)
        .order_by(D.next_time)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(t.deliveries)
        .where(D.delivery_id.in_(due))
        .values(next_time=until)
        .returning(*t.deliveries.c)
    )
    return list((await s.execute(stmt)).all())


async def earliest_delivery(s: AsyncConnection) -> datetime | None:
    stmt = select(D.next_time).where(D.state == PENDING).order_by(D.next_time).limit(1)
    return (await s.execute(stmt)).scalar_one_or_none()


async def hook(s: AsyncConnection, webhook_id: str) -> Hook | None:
    row = (await s.execute(select(t.webhooks).where(H.webhook_id == webhook_id))).one_or_none()
    return None if row is None else _hook(row)


async def save_delivery(s: AsyncConnection, delivery_id: str, **values: Any) -> None:
    await s.execute(update(t.deliveries).where(D.delivery_id == delivery_id).values(**values))


async def list_deliveries(
    s: AsyncConnection, webhook_id: str, before: list[Any] | None, limit: int
) -> list[Row[Any]]:
    stmt = select(t.deliveries).where(D.webhook_id == webhook_id)
    if before is not None:
        when = datetime.fromisoformat(before[0])
        stmt = stmt.where(
            or_(D.create_time < when, and_(D.create_time == when, D.delivery_id < before[1]))
        )
    stmt = stmt.order_by(D.create_time.desc(), D.delivery_id.desc()).limit(limit)
    return list((await s.execute(stmt)).all())
