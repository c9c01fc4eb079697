"""The job state machine: one pure function per transition, each returning the job as it
becomes, the change to record (a `changes` row and its event) and what happens to the
attempt. Nothing here does I/O; the store applies what these functions decide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2
from accord_kit.backoff import Backoff
from accord_kit.errors import FailedPrecondition

UNSPECIFIED = job_pb2.JOB_STATE_UNSPECIFIED
REJECTED, QUEUED = job_pb2.JOB_STATE_REJECTED, job_pb2.JOB_STATE_QUEUED
RUNNING, SUCCEEDED, FAILED = (
    job_pb2.JOB_STATE_RUNNING,
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_FAILED,
)
DEAD_LETTER, CANCELLED = job_pb2.JOB_STATE_DEAD_LETTER, job_pb2.JOB_STATE_CANCELLED

TERMINAL = frozenset({REJECTED, SUCCEEDED, DEAD_LETTER, CANCELLED})

TRANSITIONS: dict[int, frozenset[int]] = {
    UNSPECIFIED: frozenset({QUEUED, REJECTED}),
    QUEUED: frozenset({RUNNING, CANCELLED}),
    # RUNNING -> QUEUED: a lease that never reached its worker goes back, costing nothing.
    RUNNING: frozenset({SUCCEEDED, FAILED, DEAD_LETTER, CANCELLED, QUEUED}),
    FAILED: frozenset({QUEUED, CANCELLED}),
    DEAD_LETTER: frozenset({QUEUED}),
}

# Past-tense event names: accord.orchestrator.v1.job.<event>.
_EVENTS: dict[int, str] = {
    QUEUED: "queued",
    REJECTED: "rejected",
    RUNNING: "started",
    SUCCEEDED: "succeeded",
    FAILED: "failed",
    DEAD_LETTER: "dead_lettered",
    CANCELLED: "cancelled",
}

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_INITIAL_BACKOFF = timedelta(seconds=1)
DEFAULT_MAX_BACKOFF = timedelta(minutes=5)
DEFAULT_MULTIPLIER = 2.0
LEASE_EXPIRED = "LEASE_EXPIRED"


@dataclass(frozen=True, slots=True)
class Job:
    """The queue's view of one job: every column a transition reads or writes (no blobs)."""

    job_id: str
    tenant_id: str
    state: int
    version: int
    attempt: int
    attempt_limit: int
    priority: int
    due_time: datetime
    lease_worker: str | None
    lease_deadline: datetime | None
    status_message: str
    update_time: datetime
    finish_time: datetime | None
    concurrency_key: str = ""
    concurrency_limit: int = 0
    # W3C traceparent of the job's admission: its later spans and events join that trace.
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    """One state change: a `changes` row and one outbox event."""

    job_id: str
    tenant_id: str
    version: int
    previous_state: int
    state: int
    attempt: int
    message: str
    time: datetime
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class AttemptStart:
    job_id: str
    number: int
    worker_id: str
    time: datetime


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    job_id: str
    number: int
    outcome: int
    error_code: str
    error_message: str
    time: datetime


@dataclass(frozen=True, slots=True)
class AttemptVoid:
    """An attempt that never started (its lease was not delivered): it is forgotten."""

    job_id: str
    number: int


Attempt = AttemptStart | AttemptEnd | AttemptVoid


@dataclass(frozen=True, slots=True)
class Transition:
    """What one transition decides; `result` replaces the stored result when not None."""

    job: Job
    change: Change
    attempt: Attempt | None = None
    result: bytes | None = None


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: str
    attempt: int


def can_transition(current: int, target: int) -> bool:
    return target in TRANSITIONS.get(current, frozenset())


def event_name(state: int) -> str:
    return _EVENTS[state]


def state_name(state: int) -> str:
    return job_pb2.JobState.Name(state)  # type: ignore[arg-type]


def max_attempts(spec: job_spec_pb2.JobSpec) -> int:
    return spec.retry_policy.max_attempts or DEFAULT_MAX_ATTEMPTS


def backoff(policy: job_spec_pb2.RetryPolicy, attempt: int) -> timedelta:
    """Delay before the retry that follows `attempt`: the kit's exponential backoff, capped,
    full jitter, with the job's own initial delay, cap and multiplier."""
    initial = (
        policy.initial_backoff.ToTimedelta()
        if policy.HasField("initial_backoff")
        else DEFAULT_INITIAL_BACKOFF
    )
    cap = (
        policy.max_backoff.ToTimedelta() if policy.HasField("max_backoff") else DEFAULT_MAX_BACKOFF
    )
    delays = Backoff(
        initial=initial.total_seconds(),
        maximum=cap.total_seconds(),
        multiplier=policy.backoff_multiplier or DEFAULT_MULTIPLIER,
        attempt=max(0, attempt - 1),
    )
    return timedelta(seconds=delays.next())


def _move(job: Job, target: int, now: datetime, message: str, **values: Any) -> Transition:
    """The job in state `target`, one version on; refused when the machine forbids it."""
    if not can_transition(job.state, target):
        raise FailedPrecondition(
            f"job is {state_name(job.state)} and cannot become {state_name(target)}",
            metadata={"state": state_name(job.state)},
        )
    after = dataclasses.replace(
        job, state=target, version=job.version + 1, update_time=now, **values
    )
    change = Change(
        job.job_id,
        job.tenant_id,
        after.version,
        job.state,
        target,
        after.attempt,
        message,
        now,
        job.traceparent,
    )
    return Transition(after, change)


def admit(
    job_id: str,
    tenant_id: str,
    spec: job_spec_pb2.JobSpec,
    *,
    allowed: bool,
    message: str,
    due: datetime,
    now: datetime,
    traceparent: str = "",
) -> Transition:
    """A new job, QUEUED when the policy allowed it and REJECTED (terminal) otherwise."""
    limit = spec.concurrency if spec.HasField("concurrency") else None
    born = Job(
        job_id=job_id,
        tenant_id=tenant_id,
        state=UNSPECIFIED,
        version=0,
        attempt=0,
        attempt_limit=max_attempts(spec),
        priority=spec.priority,
        due_time=max(due, now),
        lease_worker=None,
        lease_deadline=None,
        status_message="",
        update_time=now,
        finish_time=None,
        concurrency_key=limit.key if limit else "",
        concurrency_limit=limit.max_running if limit else 0,
        traceparent=traceparent,
    )
    if allowed:
        return _move(born, QUEUED, now, "")
    return _move(born, REJECTED, now, message, status_message=message, finish_time=now)


def lease(job: Job, worker: str, deadline: datetime, now: datetime) -> Transition:
    """QUEUED -> RUNNING as attempt n+1, held by `worker` until `deadline`."""
    t = _move(
        job,
        RUNNING,
        now,
        f"leased by {worker}",
        attempt=job.attempt + 1,
        lease_worker=worker,
        lease_deadline=deadline,
    )
    return dataclasses.replace(t, attempt=AttemptStart(job.job_id, job.attempt + 1, worker, now))


def release(job: Job, now: datetime) -> Transition:
    """RUNNING -> QUEUED for a lease its worker never received: the attempt is not counted."""
    t = _move(
        job,
        QUEUED,
        now,
        "lease returned undelivered",
        attempt=job.attempt - 1,
        lease_worker=None,
        lease_deadline=None,
    )
    return dataclasses.replace(t, attempt=AttemptVoid(job.job_id, job.attempt))


def holds(job: Job | None, worker: str, lease: Lease) -> bool:
    """Whether `worker` still holds `lease` on `job`: the fence on every report."""
    return (
        job is not None
        and job.state == RUNNING
        and job.attempt == lease.attempt
        and job.lease_worker == worker
    )


def complete(job: Job, now: datetime, result: bytes) -> Transition:
    """RUNNING -> SUCCEEDED with the attempt's result; the caller checked `holds` first."""
    t = _end_attempt(
        _move(job, SUCCEEDED, now, "", lease_worker=None, lease_deadline=None, finish_time=now),
        job_pb2.ATTEMPT_OUTCOME_SUCCEEDED,
        "",
        "",
    )
    return dataclasses.replace(t, result=result)


def fail(
    job: Job,
    now: datetime,
    code: str,
    message: str,
    *,
    retryable: bool,
    policy: job_spec_pb2.RetryPolicy,
    result: bytes | None = None,
    outcome: int = job_pb2.ATTEMPT_OUTCOME_FAILED,
) -> Transition:
    """RUNNING -> FAILED (a retry is due after backoff) or DEAD_LETTER (attempts exhausted
    or not retryable). The retry-or-dead-letter rule lives here and only here."""
    summary = f"{code}: {message}"
    common = {"status_message": summary, "lease_worker": None, "lease_deadline": None}
    if retryable and job.attempt < job.attempt_limit:
        due = now + backoff(policy, job.attempt)
        t = _move(job, FAILED, now, summary, due_time=due, **common)
    else:
        t = _move(job, DEAD_LETTER, now, summary, finish_time=now, **common)
    return dataclasses.replace(_end_attempt(t, outcome, code, message), result=result)


def expire(job: Job, now: datetime, policy: job_spec_pb2.RetryPolicy) -> Transition:
    """A lease whose deadline passed without a heartbeat: the attempt failed, retryable."""
    return fail(
        job,
        now,
        LEASE_EXPIRED,
        "no heartbeat before the lease deadline; the executor was lost",
        retryable=True,
        policy=policy,
        outcome=job_pb2.ATTEMPT_OUTCOME_LEASE_EXPIRED,
    )


def requeue(job: Job, now: datetime) -> Transition:
    """FAILED -> QUEUED once the retry's backoff has passed."""
    return _move(job, QUEUED, now, "retry due", due_time=now)


def cancel(job: Job, now: datetime, reason: str) -> Transition:
    """Any non-terminal state -> CANCELLED; a running attempt ends CANCELLED too."""
    message = reason or "cancelled by client"
    t = _move(
        job,
        CANCELLED,
        now,
        message,
        status_message=message,
        lease_worker=None,
        lease_deadline=None,
        finish_time=now,
    )
    if job.state == RUNNING:
        return _end_attempt(t, job_pb2.ATTEMPT_OUTCOME_CANCELLED, "CANCELLED", message)
    return t


def retry(job: Job, now: datetime, spec: job_spec_pb2.JobSpec) -> Transition:
    """FAILED or DEAD_LETTER -> QUEUED now, with a fresh budget of attempts."""
    if job.state not in (FAILED, DEAD_LETTER):
        raise FailedPrecondition(
            f"only FAILED or DEAD_LETTER jobs can be retried; job is {state_name(job.state)}",
            metadata={"state": state_name(job.state)},
        )
    return _move(
        job,
        QUEUED,
        now,
        "retried by client",
        due_time=now,
        attempt_limit=job.attempt + max_attempts(spec),
        status_message="",
        finish_time=None,
    )


def _end_attempt(t: Transition, outcome: int, code: str, message: str) -> Transition:
    before = t.job.attempt
    end = AttemptEnd(t.job.job_id, before, outcome, code, message, t.change.time)
    return dataclasses.replace(t, attempt=end)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A due QUEUED job offered to a poll, with its encoded spec's size."""

    job: Job
    size: int


def choose(
    candidates: list[Candidate],
    running: dict[tuple[str, str], int],
    max_tasks: int,
    max_bytes: int,
) -> list[Job]:
    """The candidates to lease, in queue order: at most `max_tasks`, at most `max_bytes` of
    specs (but always the first, so a large spec is never stuck), and never more jobs of a
    concurrency key running than the job's limit. `running` counts RUNNING jobs per key."""
    counts = dict(running)
    chosen: list[Job] = []
    size = 0
    for c in candidates:
        if len(chosen) >= max_tasks or (chosen and size + c.size > max_bytes):
            break
        job = c.job
        if job.concurrency_key:
            k = (job.tenant_id, job.concurrency_key)
            if counts.get(k, 0) >= job.concurrency_limit:
                continue
            counts[k] = counts.get(k, 0) + 1
        chosen.append(job)
        size += c.size
    return chosen


def as_of(job: job_pb2.Job, change: job_pb2.JobStateChange) -> job_pb2.Job:
    """The job as it was right after `change`, from the job as it is now: its state,
    version, time and message then, only the attempts begun by then (the change's own
    attempt still open if the change started it), and a result and finish time only once
    the job had finished."""
    if change.version >= job.version:
        return job
    then = job_pb2.Job()
    then.CopyFrom(job)
    then.state = change.state
    then.version = change.version
    then.status_message = change.message
    then.update_time.CopyFrom(change.change_time)
    kept = [a for a in job.attempts if a.number <= change.attempt]
    del then.attempts[:]
    then.attempts.extend(kept)
    if change.state == RUNNING and then.attempts and then.attempts[-1].number == change.attempt:
        running = then.attempts[-1]
        for name in ("finish_time", "outcome", "error_message", "error_code"):
            running.ClearField(name)
    if change.state not in TERMINAL:
        then.ClearField("result")
        then.ClearField("finish_time")
    return then
