"""How far a tenant's jobs have got, read straight from the stack's PostgreSQL.

A bench tenant's jobs are done when every one is SUCCEEDED and the audit log holds every
event they caused: one per state change (the orchestrator's `changes` rows) and one per
policy decision. The timings come from the services' own timestamps, so how often this is
polled changes only when the bench notices, not what it reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from accord.orchestrator.v1 import job_pb2

POLL_SECONDS = 0.1

# One statement, so the counts are from one snapshot. Records of a tenant's jobs and
# decisions only: the tenant's other events (a policy change, say) are not the jobs'.
PROGRESS = """
WITH j AS (SELECT job_id, state, finish_time FROM orchestrator.jobs WHERE tenant_id = $1)
SELECT
  (SELECT count(*) FROM j) AS jobs,
  (SELECT count(*) FROM j WHERE state = $2) AS succeeded,
  (SELECT count(*) FROM j WHERE state <> ALL($3::smallint[])) AS unfinished,
  (SELECT count(*) FROM orchestrator.changes c JOIN j USING (job_id))
    + (SELECT count(*) FROM policy.decisions WHERE tenant_id = $1) AS events,
  (SELECT count(*) FROM audit.records
    WHERE tenant_id = $1 AND aggregate_type IN ('job', 'decision')) AS audited,
  (SELECT max(append_time) FROM audit.records
    WHERE tenant_id = $1 AND aggregate_type IN ('job', 'decision')) AS last_append,
  (SELECT max(finish_time) FROM j) AS last_finish
"""
TERMINAL = [
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_REJECTED,
    job_pb2.JOB_STATE_DEAD_LETTER,
    job_pb2.JOB_STATE_CANCELLED,
]


def plain_url(url: str) -> str:
    """asyncpg takes `postgresql://`; the services' URL names SQLAlchemy's driver."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass(frozen=True)
class Progress:
    """One snapshot of a tenant's jobs and their audit records."""

    jobs: int
    succeeded: int
    unfinished: int
    events: int  # state changes + decisions: the records the audit log should hold
    audited: int
    last_append: datetime | None
    last_finish: datetime | None

    @property
    def settled(self) -> bool:
        """No job can move on its own and every event so far is in the audit log."""
        return self.unfinished == 0 and self.audited >= self.events

    def seconds_since(self, start: datetime) -> float:
        """`start` to the later of the last job's finish and the last audit append."""
        ends = [t for t in (self.last_finish, self.last_append) if t is not None]
        return max(0.0, (max(ends) - start).total_seconds()) if ends else 0.0


async def progress(conn: asyncpg.Connection, tenant: str) -> Progress:
    row = await conn.fetchrow(PROGRESS, tenant, job_pb2.JOB_STATE_SUCCEEDED, TERMINAL)
    assert row is not None
    return Progress(**dict(row))


async def wait_settled(conn: asyncpg.Connection, tenant: str, deadline: float) -> Progress:
    """Poll until the tenant's jobs are settled; TimeoutError past the (loop-time) deadline."""
    return await _wait(conn, tenant, deadline, lambda p: p.settled)


async def wait_audited(conn: asyncpg.Connection, tenant: str, deadline: float) -> Progress:
    """Poll until every event of the tenant's jobs so far is in the audit log."""
    return await _wait(conn, tenant, deadline, lambda p: p.audited >= p.events)


async def _wait(
    conn: asyncpg.Connection, tenant: str, deadline: float, done: Callable[[Progress], bool]
) -> Progress:
    loop = asyncio.get_running_loop()
    while not done(now := await progress(conn, tenant)):
        if loop.time() > deadline:
            raise TimeoutError(
                f"{tenant}: {now.unfinished} of {now.jobs} jobs unfinished, "
                f"{now.audited} of {now.events} events audited at the deadline"
            )
        await asyncio.sleep(POLL_SECONDS)
    return now
