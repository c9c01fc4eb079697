"""How workflows look: client input checked and reduced to what is stored (secrets apart),
the API's view of a stored workflow, and the events of its changes."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from accord.events.v1 import workflow_events_pb2
from accord.orchestrator.v1 import schedule_pb2
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_kit import events, outbox, wellformed
from accord_kit.errors import FieldViolation, InvalidArgument, NotFound
from accord_orchestrator import schedule_views as sviews
from accord_orchestrator import tables as t
from accord_orchestrator import workflow_store as ws
from accord_orchestrator.history import PRODUCER

SERVER_FIELDS = ("workflow_id", "tenant_id", "schedule_id", "paused", "status", "etag")


def to_workflow(d: ws.Stored, *, paused: bool) -> wf.Workflow:
    view = wf.Workflow()
    view.CopyFrom(d.body)
    view.workflow_id = d.workflow_id
    view.tenant_id = d.tenant_id
    view.schedule_id = d.schedule_id
    view.paused = paused
    view.webhooks.extend(h.view() for h in d.hooks)
    st = view.status
    st.state = wf.TargetState.ValueType(d.state.target)
    st.consecutive_failures = d.state.failures
    st.results_count = d.state.count
    if d.state.last_check is not None:
        st.last_check_time.FromDatetime(d.state.last_check)
    view.create_time.FromDatetime(d.create_time)
    view.update_time.FromDatetime(d.update_time)
    view.etag = d.etag
    return view


def named(workflow: wf.Workflow) -> str:
    """The workflow an update names, with the etag it was read with; both required."""
    violations = []
    workflow_id = wellformed.resource_id(workflow.workflow_id)
    if workflow_id is None:
        violations.append(FieldViolation("workflow.workflow_id", "required, a UUID"))
    if not workflow.etag:
        violations.append(FieldViolation("workflow.etag", "required: the etag last read"))
    elif len(workflow.etag) > 128:
        violations.append(FieldViolation("workflow.etag", "at most 128 characters"))
    if violations:
        raise InvalidArgument("the update is invalid", violations)
    assert workflow_id is not None
    return workflow_id


def as_asked(request: wsp.UpdateWorkflowRequest) -> wsp.UpdateWorkflowRequest:
    """The update as its request id remembers it: the mask in order, and webhook secrets
    only as their hashes, so no secret is kept in the outcomes table."""
    copy = wsp.UpdateWorkflowRequest()
    copy.CopyFrom(request)
    copy.update_mask.paths.sort()  # the same fields, in any order
    for h in copy.workflow.webhooks:
        if h.secret:
            h.secret = hashlib.sha256(h.secret.encode()).hexdigest()
    return copy


def definition(workflow: wf.Workflow) -> tuple[wf.Workflow, list[str]]:
    """The stored definition (server fields cleared, webhook ids and secrets removed) and
    the secrets, in webhook order."""
    body = wf.Workflow()
    body.CopyFrom(workflow)
    for name in (*SERVER_FIELDS, "create_time", "update_time"):
        body.ClearField(name)  # type: ignore[arg-type]
    secrets = [h.secret for h in body.webhooks]
    for h in body.webhooks:
        h.ClearField("secret")
        h.ClearField("webhook_id")
    return body, secrets


def digest(body: Any, secrets: list[str]) -> str:
    """Identifies a request for idempotency; secrets enter only as their hashes."""
    h = hashlib.sha256(body.SerializeToString(deterministic=True))
    for secret in secrets:
        h.update(hashlib.sha256(secret.encode()).digest())
    return h.hexdigest()


def calendar(schedule: schedule_pb2.Schedule, now: Any) -> Any:
    """The calendar, checked as a schedule's is; problems named as the workflow's fields."""
    try:
        return sviews.checked(schedule, now)
    except InvalidArgument as exc:
        raise InvalidArgument(
            "workflow is invalid",
            [
                FieldViolation(
                    v.field.replace("schedule.spec", "workflow.calendar", 1).replace(
                        "schedule.job_template", "workflow", 1
                    ),
                    v.description,
                    v.reason,
                )
                for v in exc.violations
            ],
        ) from None


def hook_of(stored: ws.Stored, webhook_id: str) -> ws.Hook:
    for hook in stored.hooks:
        if hook.webhook_id == webhook_id:
            return hook
    raise NotFound(f"webhook {webhook_id} not found")


async def existing(
    s: AsyncConnection, tenant: str, workflow_id: str, *, lock: bool = False
) -> ws.Stored:
    found = await ws.get(s, tenant, workflow_id, lock=lock)
    if found is None:
        raise NotFound(f"workflow {workflow_id} not found")
    return found


async def changed(s: AsyncConnection, d: ws.Stored, view: wf.Workflow, event: str) -> None:
    await outbox.enqueue(
        s,
        t.outbox,
        events.envelope(
            producer=PRODUCER,
            aggregate="workflow",
            event=event,
            aggregate_id=d.workflow_id,
            tenant_id=d.tenant_id,
            payload=workflow_events_pb2.WorkflowChanged(workflow_id=d.workflow_id, workflow=view),
        ),
    )
