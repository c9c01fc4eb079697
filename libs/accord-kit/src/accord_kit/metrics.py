"""The work metrics operators alert on, in one place so the alert rules and the dashboard
(`ops/`) have one list of names to follow.

Every label is bounded: states, engines, producers and outcomes are enums, and free-form
codes pass through `Bounded`, which lets a fixed number of distinct values through and folds
the rest into `OTHER`. No job id, tenant or URL is ever a label.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

# Seconds, from a few milliseconds to an hour: queue waits and runs of every size.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

QUEUE_DEPTH = Gauge(
    "accord_queue_jobs",
    "Jobs by state and engine, counted from the database on the orchestrator's interval",
    ["state", "engine"],
)
START_DELAY = Histogram(
    "accord_job_start_delay_seconds",
    "From a job's due time to the lease that starts its attempt",
    buckets=WAIT_BUCKETS,
)
RUN_SECONDS = Histogram(
    "accord_job_run_seconds",
    "One attempt's run on an executor, from start to its report, by engine and outcome",
    ["engine", "outcome"],
    buckets=WAIT_BUCKETS,
)
OUTCOMES = Counter(
    "accord_job_outcomes_total",
    "Ended attempts and admissions by the state they led to and their failure code",
    ["state", "code"],
)
LEASE_EXPIRATIONS = Counter(
    "accord_job_lease_expirations_total", "Attempts failed because their lease ran out"
)
RETRIES = Counter(
    "accord_job_retries_total",
    "Jobs queued again: `backoff` after a retryable failure, `manual` by RetryJob",
    ["cause"],
)
OUTBOX_OLDEST_AGE = Gauge(
    "accord_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event in the last relay pass (0 when empty)",
)
AUDIT_LAG = Histogram(
    "accord_audit_lag_seconds",
    "From an event's time to its audit record's commit, by producer",
    ["producer"],
    buckets=WAIT_BUCKETS,
)
POLICY_DECISIONS = Counter(
    "accord_policy_decisions_total",
    "Policy decisions by kind (job, request), outcome and deciding reason",
    ["kind", "outcome", "reason"],
)
SCHEDULE_FIRE_LAG = Histogram(
    "accord_schedule_fire_lag_seconds",
    "From a schedule's nominal fire time to the fire (jitter included)",
    buckets=WAIT_BUCKETS,
)

OTHER = "OTHER"


class Bounded:
    """Lets at most `limit` distinct values of a free-form label through; then `OTHER`."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(value)
        return value


def seconds_since(then: datetime, now: datetime | None = None) -> float:
    """Non-negative seconds from `then` to `now` (clocks of two hosts may disagree)."""
    return max(0.0, ((now or datetime.now(UTC)) - then).total_seconds())


def observe_fire_lag(now: datetime, nominal: Iterable[datetime]) -> None:
    for then in nominal:
        SCHEDULE_FIRE_LAG.observe(seconds_since(then, now))
