"""The job state machine, event names and retry backoff: pure rules, no I/O."""

from __future__ import annotations

import random
from datetime import timedelta

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2

S = job_pb2.JobState
PENDING, REJECTED, QUEUED = (
    job_pb2.JOB_STATE_PENDING,
    job_pb2.JOB_STATE_REJECTED,
    job_pb2.JOB_STATE_QUEUED,
)
RUNNING, SUCCEEDED, FAILED = (
    job_pb2.JOB_STATE_RUNNING,
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_FAILED,
)
DEAD_LETTER, CANCELLED = job_pb2.JOB_STATE_DEAD_LETTER, job_pb2.JOB_STATE_CANCELLED

TERMINAL = frozenset({REJECTED, SUCCEEDED, DEAD_LETTER, CANCELLED})

_TRANSITIONS: dict[int, frozenset[int]] = {
    job_pb2.JOB_STATE_UNSPECIFIED: frozenset({PENDING, QUEUED, REJECTED}),
    PENDING: frozenset({QUEUED, REJECTED, CANCELLED}),
    QUEUED: frozenset({RUNNING, CANCELLED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, DEAD_LETTER, CANCELLED}),
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
    PENDING: "accepted",
}

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_INITIAL_BACKOFF = timedelta(seconds=1)
DEFAULT_MAX_BACKOFF = timedelta(minutes=5)
DEFAULT_MULTIPLIER = 2.0


def can_transition(current: int, target: int) -> bool:
    return target in _TRANSITIONS.get(current, frozenset())


def event_name(state: int) -> str:
    return _EVENTS[state]


def state_name(state: int) -> str:
    return job_pb2.JobState.Name(state)  # type: ignore[arg-type]


def max_attempts(spec: job_spec_pb2.JobSpec) -> int:
    return spec.retry_policy.max_attempts or DEFAULT_MAX_ATTEMPTS


def backoff(
    spec: job_spec_pb2.JobSpec, attempt: int, rng: random.Random | None = None
) -> timedelta:
    """Delay before the retry that follows `attempt`: exponential, capped, full jitter."""
    policy = spec.retry_policy
    initial = (
        policy.initial_backoff.ToTimedelta()
        if policy.HasField("initial_backoff")
        else DEFAULT_INITIAL_BACKOFF
    )
    cap = (
        policy.max_backoff.ToTimedelta() if policy.HasField("max_backoff") else DEFAULT_MAX_BACKOFF
    )
    multiplier = policy.backoff_multiplier or DEFAULT_MULTIPLIER
    ceiling = min(cap, initial * multiplier ** max(0, attempt - 1))
    return ceiling * (rng or random).random()
