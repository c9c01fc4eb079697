"""Workflow use cases: create (with its schedule, in one transaction), read, list, update
(its schedule follows), delete, pause, resume, run now, results, the delivery log, and a
test delivery."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import schedule_pb2
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_kit import idempotency, pages
from accord_kit.boundary import validate
from accord_kit.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from accord_orchestrator import schedule_store as ss
from accord_orchestrator import schedule_views as sviews
from accord_orchestrator import store
from accord_orchestrator import tables as t
from accord_orchestrator import workflow_store as ws
from accord_orchestrator import workflow_views as views
from accord_orchestrator.domain import workflow_updates as updates
from accord_orchestrator.domain import workflows as rules
from accord_orchestrator.schedule_service import ScheduleUseCases
from accord_orchestrator.secrets import SecretBox
from accord_orchestrator.webhooks import Deliverer, new_id, new_row, payload, to_delivery

DELETED = wsp.DeleteWorkflowResponse


class WorkflowUseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        schedules: ScheduleUseCases,
        box: SecretBox | None,
        deliverer: Deliverer,
    ) -> None:
        self._engine = engine
        self._schedules = schedules
        self._box = box
        self._deliverer = deliverer

    async def create(self, tenant: str, request_id: str, workflow: wf.Workflow) -> wf.Workflow:
        body, secrets = views.definition(workflow)
        problems = rules.check_definition(workflow)
        if problems:
            raise InvalidArgument(
                "workflow is invalid", [FieldViolation(f, d) for f, d in problems]
            )
        self._need_key(secrets)
        digest = views.digest(body, secrets)
        now = store.utcnow()
        schedule = schedule_pb2.Schedule(
            display_name="workflow",  # named after the workflow's id once it has one
            spec=body.calendar,
            job_template=rules.job_spec(body),
            overlap_policy=schedule_pb2.OVERLAP_POLICY_SKIP,
        )
        schedule.labels["workflow"] = body.WhichOneof("kind") or ""
        calendar = views.calendar(schedule, now)
        async with self._engine.begin() as s:
            await idempotency.claim(s, "workflow.create", tenant, request_id)
            earlier = await ws.by_request(s, tenant, request_id)
            if earlier is not None:
                if earlier.body_hash != digest:
                    raise AlreadyExists(
                        "request_id was already used with a different workflow",
                        metadata={"workflow_id": earlier.workflow_id},
                    )
                return await self._view(s, earlier)
            if await ws.name_taken(s, tenant, body.display_name):
                raise AlreadyExists(f"a workflow named {body.display_name!r} exists")
            workflow_id = str(uuid.uuid4())
            schedule.display_name = f"workflow {workflow_id}"
            made = await self._schedules.insert(
                s,
                tenant,
                f"workflow:{workflow_id}",
                schedule,
                hashlib.sha256(schedule.SerializeToString(deterministic=True)).hexdigest(),
                calendar,
                now,
            )
            hooks = self._hook_rows(workflow_id, tenant, body, secrets)
            body.ClearField("webhooks")
            row = {
                "workflow_id": workflow_id,
                "tenant_id": tenant,
                "request_id": request_id,
                "display_name": body.display_name,
                "body": body.SerializeToString(deterministic=True),
                "body_hash": digest,
                "schedule_id": made.schedule_id,
                "state": rules.State().to_json(),
                "etag": uuid.uuid4().hex,
                "create_time": now,
                "update_time": now,
            }
            try:
                await ws.insert_workflow(s, row, hooks)
            except IntegrityError:  # a concurrent create with this name won
                raise AlreadyExists(f"a workflow named {body.display_name!r} exists") from None
            stored = await views.existing(s, tenant, workflow_id)
            found = await self._view(s, stored)
            await views.changed(s, stored, found, "created")
        self._schedules.changed()
        return found

    async def update(self, tenant: str, request: wsp.UpdateWorkflowRequest) -> wf.Workflow:
        """Apply the masked fields under the workflow's etag, checked as a create is; the
        schedule gets the new calendar and job, and a retry with the request id is answered
        with the workflow the first call made."""
        workflow_id = views.named(request.workflow)
        now = store.utcnow()
        asked = views.as_asked(request)
        async with self._engine.begin() as s:
            done = await idempotency.recall(
                s, t.outcomes, "workflow.update", tenant, asked, wf.Workflow
            )
            if done is not None:
                return done
            current = await views.existing(s, tenant, workflow_id, lock=True)
            if request.workflow.etag != current.etag:
                raise Aborted(
                    "etag is stale; read the workflow again", metadata={"etag": current.etag}
                )
            body, hooks, template = await self._checked(s, tenant, current, request, now)
            state = updates.rebaselined(current.body, body, current.state)
            values = {
                "display_name": body.display_name,
                "body": body.SerializeToString(deterministic=True),
                "state": state.to_json(),
                "etag": uuid.uuid4().hex,
                "update_time": now,
            }
            try:
                await ws.save_definition(s, workflow_id, values, hooks)
            except IntegrityError:  # a concurrent update took this name
                raise AlreadyExists(f"a workflow named {body.display_name!r} exists") from None
            await self._schedules.redefine(
                s, tenant, current.schedule_id, body.calendar, template, now
            )
            stored = await views.existing(s, tenant, workflow_id)
            found = await self._view(s, stored)
            await views.changed(s, stored, found, "updated")
            await idempotency.keep(s, t.outcomes, "workflow.update", tenant, asked, found)
        self._schedules.changed()
        return found

    async def _checked(
        self,
        s: AsyncConnection,
        tenant: str,
        current: ws.Stored,
        request: wsp.UpdateWorkflowRequest,
        now: datetime,
    ) -> tuple[wf.Workflow, list[dict[str, Any]], job_spec_pb2.JobSpec]:
        """The definition the update leads to (checked as a create's is), its webhook rows
        and the job its schedule will fire."""
        merged = self._merged(current, request)
        body, secrets = views.definition(merged)
        schedule = schedule_pb2.Schedule(
            display_name=f"workflow {current.workflow_id}",
            spec=body.calendar,
            job_template=rules.job_spec(body),
        )
        views.calendar(schedule, now)
        if body.display_name != current.body.display_name and await ws.name_taken(
            s, tenant, body.display_name
        ):
            raise AlreadyExists(f"a workflow named {body.display_name!r} exists")
        self._need_key(secrets)
        ids = [h.webhook_id for h in merged.webhooks]
        hooks = self._hook_rows(current.workflow_id, tenant, body, secrets, ids)
        body.ClearField("webhooks")
        return body, hooks, schedule.job_template

    def _merged(self, current: ws.Stored, request: wsp.UpdateWorkflowRequest) -> wf.Workflow:
        """The workflow the update leads to, validated as CreateWorkflow validates one:
        kept webhooks carry their ids, and their stored secrets unless a new one is given."""
        problems = updates.mask_problems(
            current.body.WhichOneof("kind") or "", request.update_mask.paths
        )
        if problems:
            raise InvalidArgument("the update is invalid", [FieldViolation(*p) for p in problems])
        view = wf.Workflow()
        view.CopyFrom(current.body)
        view.webhooks.extend(h.view() for h in current.hooks)
        merged = updates.merged(view, request.workflow, request.update_mask)
        known = {h.webhook_id: h for h in current.hooks}
        problems = updates.hook_problems(merged.webhooks, set(known))
        for hook in merged.webhooks:
            if hook.webhook_id in known and not hook.secret and self._box is not None:
                stored = known[hook.webhook_id]
                hook.secret = self._box.open(stored.sealed, stored.webhook_id)
        checked = wf.Workflow()
        checked.CopyFrom(merged)
        for hook in checked.webhooks:
            hook.ClearField("webhook_id")  # the server's, checked above
        validate(checked, "workflow.")
        problems += rules.check_definition(merged)
        if problems:
            raise InvalidArgument("workflow is invalid", [FieldViolation(*p) for p in problems])
        return merged

    def _need_key(self, secrets: list[str]) -> None:
        """Webhook secrets are sealed at rest: without the server's key there are none."""
        if secrets and self._box is None:
            raise FailedPrecondition(
                "webhooks need a webhook key (ACCORD_ORCHESTRATOR_WEBHOOK_KEY) on the server"
            )

    def _hook_rows(
        self,
        workflow_id: str,
        tenant: str,
        body: wf.Workflow,
        secrets: list[str],
        ids: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The `webhooks` rows, each secret sealed under its webhook's id (kept from `ids`
        where one is given, else new)."""
        rows = []
        for i, (hook, secret) in enumerate(zip(body.webhooks, secrets, strict=True)):
            hook_id = (ids[i] if ids else "") or str(uuid.uuid4())
            assert self._box is not None  # checked before: webhooks need a key
            rows.append(
                {
                    "webhook_id": hook_id,
                    "workflow_id": workflow_id,
                    "tenant_id": tenant,
                    "position": i,
                    "url": hook.url,
                    "kinds": sorted(set(hook.kinds)),
                    "secret": self._box.seal(secret, hook_id),
                }
            )
        return rows

    async def get(self, tenant: str, workflow_id: str) -> wf.Workflow:
        async with self._engine.connect() as s:
            return await self._view(s, await views.existing(s, tenant, workflow_id))

    async def list_workflows(
        self, tenant: str, request: wsp.ListWorkflowsRequest
    ) -> tuple[list[wf.Workflow], str]:
        limit = pages.page_size(request.page_size)
        position = pages.decode(request.page_token, [tenant], shape=(pages.TIME, pages.UUID))
        async with self._engine.connect() as s:
            found = await ws.list_workflows(s, tenant, position, limit + 1)
            shown = [await self._view(s, d) for d in found[:limit]]
        if len(found) <= limit:
            return shown, ""
        last = found[limit - 1]
        return shown, pages.encode([last.create_time.isoformat(), last.workflow_id], [tenant])

    async def delete(
        self, tenant: str, workflow_id: str, asked: idempotency.Asked | None = None
    ) -> None:
        async with self._engine.begin() as s:
            if (
                await idempotency.recall(s, t.outcomes, "workflow.delete", tenant, asked, DELETED)
                is not None
            ):
                return
            stored = await views.existing(s, tenant, workflow_id, lock=True)
            found = await self._view(s, stored)
            schedule = await ss.get(s, tenant, stored.schedule_id, lock=True)
            if schedule is not None:
                await ss.delete_schedule(s, stored.schedule_id)
                await sviews.changed(s, schedule, "deleted")
            await ws.delete_workflow(s, workflow_id)
            await views.changed(s, stored, found, "deleted")
            await idempotency.keep(s, t.outcomes, "workflow.delete", tenant, asked, DELETED())
        self._schedules.changed()

    async def pause(
        self, tenant: str, workflow_id: str, note: str, asked: idempotency.Asked | None = None
    ) -> wf.Workflow:
        return await self._set_paused(tenant, workflow_id, note, asked, paused=True)

    async def resume(
        self, tenant: str, workflow_id: str, asked: idempotency.Asked | None = None
    ) -> wf.Workflow:
        return await self._set_paused(tenant, workflow_id, "", asked, paused=False)

    async def _set_paused(
        self,
        tenant: str,
        workflow_id: str,
        note: str,
        asked: idempotency.Asked | None,
        *,
        paused: bool,
    ) -> wf.Workflow:
        """Pause or resume the workflow's schedule and say so, in one transaction."""
        scope = "workflow.pause" if paused else "workflow.resume"
        async with self._engine.begin() as s:
            done = await idempotency.recall(s, t.outcomes, scope, tenant, asked, wf.Workflow)
            if done is not None:
                return done
            stored = await views.existing(s, tenant, workflow_id, lock=True)
            await self._schedules.set_paused(s, tenant, stored.schedule_id, paused, note)
            found = await self._view(s, stored)
            await views.changed(s, stored, found, "paused" if paused else "resumed")
            await idempotency.keep(s, t.outcomes, scope, tenant, asked, found)
        self._schedules.changed()
        return found

    async def run(
        self, tenant: str, workflow_id: str, request_id: str, asked: idempotency.Asked | None = None
    ) -> str:
        """Run the check now through the workflow's schedule, once per request id."""
        async with self._engine.connect() as s:
            stored = await views.existing(s, tenant, workflow_id)
        return (
            await self._schedules.trigger(
                tenant, stored.schedule_id, request_id, schedule_pb2.OVERLAP_POLICY_SKIP, asked
            )
        ).job_id

    async def results(
        self, tenant: str, request: wsp.ListWorkflowResultsRequest
    ) -> tuple[list[wf.WorkflowResult], str]:
        limit = pages.page_size(request.page_size)
        filters = [tenant, request.workflow_id]
        position = pages.decode(request.page_token, filters, shape=(pages.INDEX,))
        async with self._engine.connect() as s:
            await views.existing(s, tenant, request.workflow_id)
            before = position[0] if position else None
            found = await ws.list_results(s, request.workflow_id, before, limit + 1)
        if len(found) <= limit:
            return found, ""
        return found[:limit], pages.encode([int(found[limit - 1].result_id)], filters)

    async def deliveries(
        self, tenant: str, request: wsp.ListWebhookDeliveriesRequest
    ) -> tuple[list[wsp.WebhookDelivery], str]:
        limit = pages.page_size(request.page_size)
        filters = [tenant, request.workflow_id, request.webhook_id]
        position = pages.decode(request.page_token, filters, shape=(pages.TIME, pages.UUID))
        async with self._engine.connect() as s:
            views.hook_of(await views.existing(s, tenant, request.workflow_id), request.webhook_id)
            found = await ws.list_deliveries(s, request.webhook_id, position, limit + 1)
        shown = [to_delivery(r) for r in found[:limit]]
        if len(found) <= limit:
            return shown, ""
        last = found[limit - 1]
        return shown, pages.encode([last.create_time.isoformat(), last.delivery_id], filters)

    async def test_webhook(
        self, tenant: str, workflow_id: str, webhook_id: str, request_id: str
    ) -> wsp.WebhookDelivery:
        """Queue a test delivery and make its one attempt now; the same request id returns
        the delivery it made."""
        now = store.utcnow()
        async with self._engine.begin() as s:
            # Concurrent repeats wait here and then find the first one's delivery.
            await idempotency.claim(s, "webhook.test", tenant, request_id)
            stored = await views.existing(s, tenant, workflow_id)
            hook = views.hook_of(stored, webhook_id)
            earlier = await ws.delivery_by_request(s, webhook_id, request_id)
            if earlier is not None:
                return to_delivery(earlier)
            delivery_id = new_id()
            kind = wf.NOTIFICATION_KIND_TEST
            body = payload(delivery_id, kind, workflow_id, stored.body.display_name, None, now)
            row = new_row(hook, kind, "", body, delivery_id, request_id, now)
            row["next_time"] = None  # sent here, never by the loop
            try:
                await ws.insert_deliveries(s, [row])
            except IntegrityError:
                raise AlreadyExists("a concurrent call used this request_id") from None
        async with self._engine.connect() as s:
            claimed = await ws.delivery(s, delivery_id)
        assert claimed is not None
        await self._deliverer.attempt(claimed, max_attempts=1)
        async with self._engine.connect() as s:
            done = await ws.delivery(s, delivery_id)
        assert done is not None
        return to_delivery(done)

    async def _view(self, s: AsyncConnection, d: ws.Stored) -> wf.Workflow:
        schedule = await ss.get(s, d.tenant_id, d.schedule_id)
        return views.to_workflow(d, paused=schedule.paused if schedule is not None else True)
