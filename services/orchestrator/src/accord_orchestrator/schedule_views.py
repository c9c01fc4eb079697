"""How schedules look: client input checked and reduced to what is stored, the API's
view of a stored schedule, action rows, and the events of changes and fires."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2
from sqlalchemy.ext.asyncio import AsyncConnection

from accord.events.v1 import schedule_events_pb2
from accord.orchestrator.v1 import job_pb2, schedule_pb2
from accord_kit import events, jobspec, notify, outbox, wellformed
from accord_kit.boundary import validate
from accord_kit.errors import FieldViolation, InvalidArgument
from accord_orchestrator import schedule_store as ss
from accord_orchestrator import tables as t
from accord_orchestrator.domain import calendars
from accord_orchestrator.domain import schedules as rules
from accord_orchestrator.history import PRODUCER

UPDATABLE = {"display_name", "spec", "job_template", "overlap_policy", "catchup_window", "labels"}
SPEC_FIELDS = {f.name for f in schedule_pb2.ScheduleSpec.DESCRIPTOR.fields}
MAX_CATCHUP = timedelta(days=366)
# NOTIFY channel of schedule changes: wakes every replica's firing loop.
CHANNEL = "orchestrator_schedules"


def definition(schedule: schedule_pb2.Schedule) -> schedule_pb2.Schedule:
    """The stored part of a schedule: what a client sets, without server fields."""
    body = schedule_pb2.Schedule()
    body.CopyFrom(schedule)
    for name in (
        "schedule_id",
        "tenant_id",
        "paused",
        "pause_note",
        "next_fire_times",
        "recent_actions",
        "create_time",
        "update_time",
        "etag",
    ):
        body.ClearField(name)
    return body


def checked(body: schedule_pb2.Schedule, created: datetime) -> calendars.Calendar:
    """Validate what protovalidate cannot: the calendar, the name, the template, bounds."""
    validate(body, "schedule.")
    violations = []
    if not 1 <= len(body.display_name) <= 200:
        violations.append(FieldViolation("schedule.display_name", "must be 1 to 200 characters"))
    if not body.HasField("job_template"):
        violations.append(FieldViolation("schedule.job_template", "required"))
    else:
        violations += jobspec.violations(body.job_template, "schedule.job_template.")
    if body.HasField("catchup_window") and not (
        timedelta(0) <= body.catchup_window.ToTimedelta() <= MAX_CATCHUP
    ):
        violations.append(FieldViolation("schedule.catchup_window", "must be 0 to 366 days"))
    if violations:
        raise InvalidArgument("schedule is invalid", violations)
    return rules.calendar_of(body, created)


def mask(schedule: schedule_pb2.Schedule, mask: field_mask_pb2.FieldMask) -> set[str]:
    violations = []
    schedule_id = wellformed.resource_id(schedule.schedule_id)
    if schedule_id is None:
        violations.append(FieldViolation("schedule.schedule_id", "required, a UUID"))
    else:
        schedule.schedule_id = schedule_id
    if not schedule.etag:
        violations.append(FieldViolation("schedule.etag", "required: the etag last read"))
    bad = [
        p
        for p in mask.paths
        if p not in UPDATABLE and not (p.startswith("spec.") and p[5:] in SPEC_FIELDS)
    ]
    if bad or not mask.paths:
        violations.append(
            FieldViolation(
                "update_mask",
                f"paths must be non-empty and among {', '.join(sorted(UPDATABLE))}, "
                f"spec.<field>; got {', '.join(bad) or 'none'}",
            )
        )
    if violations:
        raise InvalidArgument("the update is invalid", violations)
    return set(mask.paths)


def jitter(body: schedule_pb2.Schedule) -> timedelta:
    return body.spec.jitter.ToTimedelta() if body.spec.HasField("jitter") else timedelta(0)


def action(
    schedule_time: datetime,
    fire_time: datetime,
    note: str,
    job: Any = None,
    count: int = 1,
) -> schedule_pb2.ScheduleAction:
    action = schedule_pb2.ScheduleAction(
        job_id=job.job_id if job is not None else "",
        job_state=job_pb2.JobState.ValueType(job.state if job is not None else 0),
        skipped=job is None,
        note=note,
        fire_count=count,
    )
    action.schedule_time.FromDatetime(schedule_time)
    action.fire_time.FromDatetime(fire_time)
    return action


def action_row(schedule_id: str, a: schedule_pb2.ScheduleAction) -> dict[str, Any]:
    return {
        "schedule_id": schedule_id,
        "schedule_time": a.schedule_time.ToDatetime(tzinfo=UTC),
        "fire_time": a.fire_time.ToDatetime(tzinfo=UTC),
        "job_id": a.job_id,
        "job_state": a.job_state,
        "skipped": a.skipped,
        "note": a.note,
        "fire_count": a.fire_count,
    }


def fired(d: ss.Stored, action: schedule_pb2.ScheduleAction) -> Any:
    return events.envelope(
        producer=PRODUCER,
        aggregate="schedule",
        event="skipped" if action.skipped else "fired",
        aggregate_id=d.schedule_id,
        tenant_id=d.state.tenant_id,
        payload=schedule_events_pb2.ScheduleFired(schedule_id=d.schedule_id, action=action),
    )


async def changed(s: AsyncConnection, d: ss.Stored, event: str, fields: Sequence[str] = ()) -> None:
    """The change's event, and a NOTIFY that wakes every replica's firing loop."""
    await notify.notify(s, CHANNEL)
    await outbox.enqueue(
        s,
        t.outbox,
        events.envelope(
            producer=PRODUCER,
            aggregate="schedule",
            event=event,
            aggregate_id=d.schedule_id,
            tenant_id=d.state.tenant_id,
            payload=schedule_events_pb2.ScheduleChanged(
                schedule_id=d.schedule_id,
                schedule=to_schedule(d, []),
                changed_fields=list(fields),
            ),
        ),
    )


def to_schedule(
    d: ss.Stored, recent: Sequence[schedule_pb2.ScheduleAction]
) -> schedule_pb2.Schedule:
    view = schedule_pb2.Schedule()
    view.CopyFrom(d.schedule)
    view.schedule_id = d.schedule_id
    view.tenant_id = d.state.tenant_id
    view.paused = d.paused
    view.pause_note = d.pause_note
    view.etag = d.etag
    view.create_time.FromDatetime(d.create_time)
    view.update_time.FromDatetime(d.update_time)
    view.recent_actions.extend(recent)
    if d.state.next_time is not None:
        calendar = rules.calendar_of(d.schedule, d.create_time)
        upcoming = [d.state.next_time]
        upcoming += calendars.upcoming(calendar, d.state.next_time, rules.SHOWN - 1)
        for when in upcoming:
            view.next_fire_times.add().FromDatetime(when)
    return view


def new_row(
    schedule_id: str,
    tenant: str,
    request_id: str,
    body: schedule_pb2.Schedule,
    digest: str,
    next_time: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The `schedules` row of a new schedule."""
    return {
        "schedule_id": schedule_id,
        "tenant_id": tenant,
        "request_id": request_id,
        "display_name": body.display_name,
        "body": body.SerializeToString(deterministic=True),
        "body_hash": digest,
        "labels": dict(body.labels),
        "paused": False,
        "pause_note": "",
        "next_time": next_time,
        "due_time": rules.due_time(schedule_id, next_time, None, jitter(body), now),
        "buffered_time": None,
        "last_job_id": "",
        "etag": uuid.uuid4().hex,
        "create_time": now,
        "update_time": now,
    }
