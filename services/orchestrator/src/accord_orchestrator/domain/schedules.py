"""What a schedule does when it is due: which fires start a job, which are skipped (the
catch-up window, the overlap policy), what is buffered, and when to look again. Pure:
the caller passes the clock and whether the schedule's previous job is still running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from accord.orchestrator.v1 import schedule_pb2
from accord_orchestrator.domain import calendars

SKIP = schedule_pb2.OVERLAP_POLICY_SKIP
BUFFER_ONE = schedule_pb2.OVERLAP_POLICY_BUFFER_ONE
ALLOW_ALL = schedule_pb2.OVERLAP_POLICY_ALLOW_ALL
CANCEL_PREVIOUS = schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS

DEFAULT_CATCHUP = timedelta(minutes=1)
# Fires (started or skipped) one pass handles per schedule at most; the rest wait for the
# next pass, which follows at once. Bounds the work of a long outage's catch-up.
MAX_FIRES_PER_PASS = 500
# While a buffered fire waits for the running job, the schedule is looked at this often.
BUFFER_RECHECK = timedelta(seconds=1)
SHOWN = 10  # next fire times and recent actions on a schedule

MISSED = "missed: older than the catch-up window"
OVERLAPPED = "skipped: the previous job is still running"
BUFFER_FULL = "skipped: a fire is already buffered"
SUPERSEDED = "skipped: superseded by a later fire of the same pass"


@dataclass(frozen=True)
class State:
    """The firing state of a schedule, as stored."""

    schedule_id: str
    tenant_id: str
    next_time: datetime | None
    buffered_time: datetime | None
    last_job_id: str


@dataclass(frozen=True)
class Fire:
    """A fire that starts a job (after cancelling the previous one, if `cancel`)."""

    schedule_time: datetime
    note: str
    cancel: bool = False
    # The job's request id; empty means the one derived from schedule and nominal time.
    request_id: str = ""


@dataclass(frozen=True)
class Skip:
    """Fires that start nothing: `count` consecutive ones from `schedule_time`."""

    schedule_time: datetime
    note: str
    count: int = 1


@dataclass
class Plan:
    fires: list[Fire] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    next_time: datetime | None = None
    buffered_time: datetime | None = None


def calendar_of(
    schedule: schedule_pb2.Schedule, created: datetime, prefix: str = "schedule.spec."
) -> calendars.Calendar:
    """The schedule's calendar; InvalidArgument naming the field when it is not valid."""
    spec = schedule.spec
    kind = spec.WhichOneof("kind")
    return calendars.parse(
        time_zone=spec.time_zone,
        start=_time(spec, "start_time") or created,
        end=_time(spec, "end_time"),
        cron=spec.cron if kind == "cron" else "",
        interval=spec.interval.ToTimedelta() if kind == "interval" else None,
        rrule=spec.rrule if kind == "rrule" else "",
        once=_time(spec, "once_time") if kind == "once_time" else None,
        prefix=prefix,
    )


def backfill_calendar(
    schedule: schedule_pb2.Schedule, created: datetime, since: datetime
) -> calendars.Calendar:
    """The calendar as if the schedule had run since `since`: without an explicit
    start_time, one before the range, keeping an interval's phase."""
    if schedule.spec.HasField("start_time") or since >= created:
        return calendar_of(schedule, created)
    anchor = since
    if schedule.spec.WhichOneof("kind") == "interval":
        step = schedule.spec.interval.ToTimedelta()
        anchor = created + ((since - created) // step) * step  # at or before `since`
    return calendar_of(schedule, anchor)


def _time(spec: schedule_pb2.ScheduleSpec, name: str) -> datetime | None:
    if not spec.HasField(name):  # type: ignore[arg-type]
        return None
    stamp: datetime = getattr(spec, name).ToDatetime(tzinfo=UTC)
    return stamp


def policy_of(value: int) -> int:
    return value or SKIP


def catchup_of(schedule: schedule_pb2.Schedule) -> timedelta:
    if schedule.HasField("catchup_window"):
        return schedule.catchup_window.ToTimedelta()
    return DEFAULT_CATCHUP


def request_id(schedule_id: str, schedule_time: datetime) -> str:
    """The job request id of a fire: one job per schedule and nominal time, ever."""
    return f"schedule:{schedule_id}:{schedule_time.astimezone(UTC).isoformat()}"


def plan(
    state: State,
    calendar: calendars.Calendar,
    *,
    now: datetime,
    running: bool,
    policy: int,
    catchup: timedelta,
) -> Plan:
    """Every fire due by `now`, in order: missed ones (older than the catch-up window) are
    skipped, the rest go through the overlap policy one after another."""
    out = Plan(buffered_time=state.buffered_time)
    policy = policy_of(policy)
    if out.buffered_time is not None and not running:
        out.fires.append(Fire(out.buffered_time, "buffered"))
        out.buffered_time, running = None, True
    nominal, cutoff, handled = state.next_time, now - catchup, 0
    while nominal is not None and nominal <= now and handled < MAX_FIRES_PER_PASS:
        handled += 1
        if nominal < cutoff:
            _skip(out, nominal, MISSED)
        else:
            running = _overlap(out, nominal, policy, running)
        nominal = calendars.next_after(calendar, nominal)
    out.next_time = nominal
    return out


def sequence(
    times: list[datetime], *, policy: int, running: bool, buffered: datetime | None, note: str
) -> Plan:
    """Fires outside the calendar (trigger, backfill), in order, through the overlap policy:
    each one overlaps the one before it, whose job has only just been queued."""
    out = Plan(buffered_time=buffered)
    policy = policy_of(policy)
    for when in times:
        running = _overlap(out, when, policy, running, note)
    return out


def _overlap(
    out: Plan, nominal: datetime, policy: int, running: bool, note: str = "scheduled"
) -> bool:
    """Apply the overlap policy to one fire; whether a job is running afterwards."""
    if not running or policy == ALLOW_ALL:
        out.fires.append(Fire(nominal, note))
    elif policy == CANCEL_PREVIOUS:
        # A fire of this same pass has no job yet to cancel: the later fire replaces it.
        for f in [f for f in out.fires if f.note != "buffered"]:
            out.fires.remove(f)
            out.skips.append(Skip(f.schedule_time, SUPERSEDED))
        out.fires.append(Fire(nominal, note, cancel=True))
    elif policy == BUFFER_ONE and out.buffered_time is None:
        out.buffered_time = nominal
    else:
        out.skips.append(Skip(nominal, BUFFER_FULL if policy == BUFFER_ONE else OVERLAPPED))
    return True


def _skip(out: Plan, nominal: datetime, note: str) -> None:
    """Consecutive missed fires become one skip that counts them."""
    last = out.skips[-1] if out.skips else None
    if last is not None and last.note == note:
        out.skips[-1] = Skip(last.schedule_time, note, last.count + 1)
    else:
        out.skips.append(Skip(nominal, note))


def due_time(
    schedule_id: str,
    next_time: datetime | None,
    buffered_time: datetime | None,
    jitter: timedelta,
    now: datetime,
) -> datetime | None:
    """When the firing loop should next look at the schedule."""
    due = None
    if next_time is not None:
        due = next_time + calendars.jitter(f"{schedule_id}/{next_time.isoformat()}", jitter)
    if buffered_time is not None:
        recheck = now + BUFFER_RECHECK
        due = recheck if due is None else min(due, recheck)
    return due
