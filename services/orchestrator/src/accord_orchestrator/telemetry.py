"""The queue's work metrics: what each committed batch of transitions did, and the queue's
depth counted from the database (see `accord_kit.metrics` for the names)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from accord.common.v1 import job_spec_pb2
from accord_kit import metrics as m
from accord_kit import tracing
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as rules

# The states a job waits or works in; terminal states are counted as outcomes instead.
OPEN_STATES = (rules.QUEUED, rules.RUNNING, rules.FAILED)
ENGINES = (job_spec_pb2.ENGINE_HTTP, job_spec_pb2.ENGINE_BROWSER)
_codes = m.Bounded()


def attributes(job: rules.Job) -> dict[str, str | int]:
    """A job's span attributes (spans may name the job: they are not metric labels)."""
    return {"accord.job_id": job.job_id, "accord.attempt": job.attempt}


def observe(transitions: Sequence[rules.Transition]) -> None:
    """Count what committed transitions did: starts (with their delay) and ended attempts;
    while tracing is on, mark each end in its job's trace."""
    for tr in transitions:
        if isinstance(tr.attempt, rules.AttemptEnd) and tracing.enabled():
            name = f"job.{rules.event_name(tr.change.state)}"
            tracing.mark(name, tr.job.traceparent, attributes(tr.job))
        if isinstance(tr.attempt, rules.AttemptStart):
            m.START_DELAY.observe(m.seconds_since(tr.job.due_time, tr.change.time))
        elif isinstance(tr.attempt, rules.AttemptEnd):
            code = tr.attempt.error_code
            state = label(rules.state_name(tr.change.state), "JOB_STATE_")
            m.OUTCOMES.labels(state, _codes(code or "NONE")).inc()
            if code == rules.LEASE_EXPIRED:
                m.LEASE_EXPIRATIONS.inc()


def label(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


async def count_depth(engine: AsyncEngine) -> int:
    """Set the queue-depth gauge from one grouped count over the open states' indexes."""
    j = t.jobs
    query = (
        select(j.c.state, j.c.engine, func.count())
        .where(j.c.state.in_(OPEN_STATES))
        .group_by(j.c.state, j.c.engine)
    )
    async with engine.connect() as s:
        counts = {(r[0], r[1]): r[2] for r in (await s.execute(query)).all()}
    for state in OPEN_STATES:
        for kind in ENGINES:
            m.QUEUE_DEPTH.labels(
                label(rules.state_name(state), "JOB_STATE_"),
                label(job_spec_pb2.Engine.Name(kind), "ENGINE_"),
            ).set(counts.get((state, kind), 0))
    return sum(counts.values())
