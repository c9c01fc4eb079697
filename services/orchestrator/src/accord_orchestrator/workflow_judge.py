"""The judging loop: turns each ended job of a workflow into a result, exactly once.

A pass finds ended jobs of workflows that are not judged yet, and judges each workflow's
jobs in one transaction that holds the workflow's row (SKIP LOCKED: another replica
judging it is left to it). The result, the new state, the `workflow_jobs` mark that the
job is judged, the webhook deliveries and the events commit together, so a crash before
the commit judges the job again from scratch and one after it never does.

A listing with further pages runs one job per page: a page with a next link (within the
page limit) makes the next page's job, with a request id naming the run and the page, and
the last page judges the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accord.common.v1 import job_result_pb2
from accord.events.v1 import workflow_events_pb2
from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord_kit import events, outbox
from accord_orchestrator import store
from accord_orchestrator import tables as t
from accord_orchestrator import workflow_store as ws
from accord_orchestrator.domain import workflows as rules
from accord_orchestrator.service import JobUseCases
from accord_orchestrator.webhooks import Deliverer, new_id, new_row, payload

log = structlog.get_logger("accord.workflows")


class Judge:
    def __init__(
        self,
        engine: AsyncEngine,
        jobs: JobUseCases,
        deliverer: Deliverer,
        idle: float = 0.5,
        batch: int = 200,
        lookback: timedelta = timedelta(days=1),
    ) -> None:
        """`lookback`: how long after a job ended it may still be judged (the bound on
        each pass's scan; only matters when no replica judged for that long)."""
        self._engine = engine
        self._lookback = lookback
        self._jobs = jobs
        self._deliverer = deliverer
        self._idle = idle
        self._batch = batch
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                judged = await self.judge_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed pass is tried again; the loop must not die
                log.warning("workflows.pass_failed", error=repr(exc))
                judged = 0
            if judged < self._batch:
                await asyncio.sleep(self._idle)

    async def judge_pending(self) -> int:
        """One pass; returns how many jobs it judged."""
        async with self._engine.connect() as s:
            pending = await ws.unjudged(s, store.utcnow() - self._lookback, self._batch)
        grouped: dict[str, list[str]] = {}
        for workflow_id, job_id in pending:
            grouped.setdefault(workflow_id, []).append(job_id)
        judged = 0
        for workflow_id, job_ids in grouped.items():
            try:
                judged += await self._judge_workflow(workflow_id, job_ids)
            except Exception as exc:  # nothing of it committed: the next pass tries again
                log.warning("workflows.judge_failed", workflow_id=workflow_id, error=repr(exc))
        if judged:
            self._deliverer.wake()
        return judged

    async def _judge_workflow(self, workflow_id: str, job_ids: Sequence[str]) -> int:
        judged = 0
        async with self._engine.begin() as s:
            d = await ws.lock_free(s, workflow_id)
            if d is None:
                return 0  # another replica holds it, or it was deleted
            for job_id in job_ids:
                run = await ws.run_of(s, job_id)
                if run is not None and run[2]:
                    continue  # judged by a pass that committed after this one looked
                job = await _job(s, d.tenant_id, job_id)
                if job is None:
                    continue
                first, page = (run[0], run[1]) if run is not None else (job_id, 1)
                judgement = await self._judgement(s, d, job, first, page)
                if judgement is not None:
                    await _record(s, d, judgement, store.utcnow())
                    d = replace(d, state=judgement.state)
                await ws.note_job(s, job_id, workflow_id, first, page, True)
                judged += 1
        return judged

    async def _judgement(
        self, s: AsyncConnection, d: ws.Stored, job: job_pb2.Job, first: str, page: int
    ) -> rules.Judgement | None:
        """The job's judgement, or None when it is a page of a run that goes on."""
        checked = _checked(job, rules.target_url(d.body))
        if d.body.WhichOneof("kind") != "job_postings":
            return rules.judge(d.body, d.state, checked)
        listing = d.body.job_postings
        following = rules.next_page(listing, checked, page)
        if following is not None:
            request_id = f"workflow:{d.workflow_id}:{first}:page:{page + 1}"
            spec = rules.job_spec(d.body, following, page + 1)
            made = await self._jobs.create_scheduled(
                d.tenant_id, [(request_id, spec, d.schedule_id)]
            )
            await ws.note_job(s, made[request_id].job_id, d.workflow_id, first, page + 1, False)
            return None
        pages = []
        for page_job_id in [first, *await ws.run_pages(s, first)]:
            page_job = job if page_job_id == job.job_id else await _job(s, d.tenant_id, page_job_id)
            if page_job is not None:
                pages.append(_checked(page_job, rules.target_url(d.body)))
        return rules.judge_postings(listing, d.state, pages)


async def _job(s: AsyncConnection, tenant: str, job_id: str) -> job_pb2.Job | None:
    row = await store.get_row(s, tenant, job_id)
    return None if row is None else (await store.load_jobs(s, [row]))[0]


def _checked(job: job_pb2.Job, url: str) -> rules.Checked:
    """What the job found, in the terms the workflow rules use."""
    finished = (
        job.finish_time.ToDatetime(tzinfo=UTC) if job.HasField("finish_time") else store.utcnow()
    )
    last = job.attempts[-1] if job.attempts else None
    code = last.error_code if last is not None else ""
    page: dict[str, Any] = {}
    outputs = job.result.outputs
    if rules.PAGE_STEP in outputs.fields:
        value = outputs.fields[rules.PAGE_STEP]
        if value.HasField("struct_value"):
            page = dict(value.struct_value.items())
    step = job.result.steps[0] if job.result.steps else None
    latency = step.duration.ToTimedelta().total_seconds() if step is not None else 0.0
    requests = [r for r in job.result.requests if r.sent]
    expiry = None
    if requests and requests[-1].HasField("certificate_expire_time"):
        expiry = requests[-1].certificate_expire_time.ToDatetime(tzinfo=UTC)
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        reason = (last.error_message if last is not None else "") or job.status_message
        if job.state == job_pb2.JOB_STATE_REJECTED:
            reason = f"the policy refused the check: {job.status_message}"
        refused = [
            (x.code, x.message) for r in job.result.requests if not r.sent for x in r.reasons
        ]
        reason = rules.refusal(refused) or reason
        return rules.Checked(
            job_id=job.job_id,
            ran=False,
            reason=reason or f"the job ended {job_pb2.JobState.Name(job.state)}",
            error_code=code,
            url=str(page.get("url") or url),
            http_status=step.http_status if step is not None else 0,
            latency=latency,
            finish_time=finished,
            refused=job.state == job_pb2.JOB_STATE_REJECTED or code in rules.REFUSED,
        )
    rendered = outputs.fields.get(rules.RENDERED_STEP)
    return rules.Checked(
        job_id=job.job_id,
        ran=True,
        reason="",
        error_code="",
        url=str(page.get("url") or url),
        http_status=int(page.get("status") or (step.http_status if step else 0)),
        latency=latency,
        body=rendered.string_value if rendered is not None else str(page.get("body") or ""),
        certificate_expiry=expiry,
        finish_time=finished,
        screenshot=_screenshot(job),
    )


def _screenshot(job: job_pb2.Job) -> job_result_pb2.ArtifactRef | None:
    """The artifact of the job's screenshot step, if it took one."""
    shot = job.result.outputs.fields.get(rules.SCREENSHOT_STEP)
    if shot is None or not shot.HasField("struct_value"):
        return None
    artifact_id = shot.struct_value.fields["artifact_id"].string_value
    for ref in job.result.artifacts:
        if ref.artifact_id == artifact_id:
            return ref
    return None


async def _record(
    s: AsyncConnection, d: ws.Stored, judgement: rules.Judgement, now: datetime
) -> None:
    result = judgement.result
    result.workflow_id = d.workflow_id
    result_id = await ws.insert_result(
        s,
        {
            "workflow_id": d.workflow_id,
            "job_id": result.job_id,
            "outcome": result.outcome,
            "notification": judgement.notify,
            "body": b"",
            "check_time": result.check_time.ToDatetime(tzinfo=UTC)
            if result.HasField("check_time")
            else now,
        },
    )
    result.result_id = str(result_id)
    if judgement.notify:
        result.notification = wf.NotificationKind.ValueType(judgement.notify)
    await ws.save_result_body(s, result_id, result.SerializeToString())
    await ws.save_state(s, d.workflow_id, judgement.state, now)
    envelopes = [_event(d, "checked", result, [])]
    if judgement.notify:
        rows = []
        for hook in d.hooks:
            if not rules.wants(hook.view(), judgement.notify):
                continue
            delivery_id = new_id()
            body = payload(
                delivery_id, judgement.notify, d.workflow_id, d.body.display_name, result, now
            )
            rows.append(
                new_row(hook, judgement.notify, result.result_id, body, delivery_id, "", now)
            )
        await ws.insert_deliveries(s, rows)
        envelopes.append(_event(d, "notified", result, [r["webhook_id"] for r in rows]))
    await outbox.enqueue(s, t.outbox, *envelopes)


def _event(d: ws.Stored, event: str, result: wf.WorkflowResult, hooks: list[str]) -> Any:
    return events.envelope(
        producer="orchestrator",
        aggregate="workflow",
        event=event,
        aggregate_id=d.workflow_id,
        tenant_id=d.tenant_id,
        payload=workflow_events_pb2.WorkflowChecked(
            workflow_id=d.workflow_id, result=result, webhook_ids=hooks
        ),
    )
