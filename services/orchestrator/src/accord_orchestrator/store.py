"""SQL for jobs, attempts and state changes: rows in, domain records and protos out.

Everything on the hot path is set-based: a batch of transitions is one UPDATE over
`unnest` arrays, one INSERT per table, whatever the batch's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as rules

J = t.jobs.c
# The columns of domain.jobs.Job, in its field order (and so in _CANDIDATES).
QUEUE_COLUMNS = [
    J.job_id,
    J.tenant_id,
    J.state,
    J.version,
    J.attempt,
    J.attempt_limit,
    J.priority,
    J.due_time,
    J.lease_worker,
    J.lease_deadline,
    J.status_message,
    J.update_time,
    J.finish_time,
    J.concurrency_key,
    J.concurrency_limit,
    J.traceparent,
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _record(row: Row[Any]) -> rules.Job:
    return rules.Job(*row[: len(QUEUE_COLUMNS)])


def to_job(row: Any, attempts: Sequence[Row[Any]] = ()) -> job_pb2.Job:
    """The API's view of a full `jobs` row (or its columns as attributes) and its attempts."""
    job = job_pb2.Job(
        job_id=row.job_id,
        tenant_id=row.tenant_id,
        request_id=row.request_id,
        spec=job_spec_pb2.JobSpec.FromString(row.spec),
        state=row.state,
        status_message=row.status_message,
        schedule_id=row.schedule_id,
        version=row.version,
    )
    if row.decision:
        job.decision.ParseFromString(row.decision)
    if row.result:
        job.result.ParseFromString(row.result)
    job.create_time.FromDatetime(row.create_time)
    job.update_time.FromDatetime(row.update_time)
    job.due_time.FromDatetime(row.due_time)
    if row.finish_time:
        job.finish_time.FromDatetime(row.finish_time)
    for a in attempts:
        attempt = job.attempts.add(
            number=a.number,
            worker_id=a.worker_id,
            outcome=a.outcome,
            error_code=a.error_code,
            error_message=a.error_message,
        )
        attempt.start_time.FromDatetime(a.start_time)
        if a.finish_time:
            attempt.finish_time.FromDatetime(a.finish_time)
    return job


async def insert_jobs(s: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    await s.execute(insert(t.jobs), rows)


async def find_by_requests(
    s: AsyncConnection, tenant: str, request_ids: list[str]
) -> dict[str, Row[Any]]:
    stmt = select(t.jobs).where(J.tenant_id == tenant, J.request_id.in_(request_ids))
    return {r.request_id: r for r in (await s.execute(stmt)).all()}


async def get_row(s: AsyncConnection, tenant: str, job_id: str) -> Row[Any] | None:
    stmt = select(t.jobs).where(J.tenant_id == tenant, J.job_id == job_id)
    return (await s.execute(stmt)).one_or_none()


async def load_jobs(s: AsyncConnection, rows: Sequence[Row[Any]]) -> list[job_pb2.Job]:
    """Full rows as API jobs, with every attempt, in one query for all of them."""
    if not rows:
        return []
    a = t.attempts.c
    attempt_rows = (
        await s.execute(
            select(t.attempts)
            .where(a.job_id.in_([r.job_id for r in rows]))
            .order_by(a.job_id, a.number)
        )
    ).all()
    by_job: dict[str, list[Row[Any]]] = {}
    for row in attempt_rows:
        by_job.setdefault(row.job_id, []).append(row)
    return [to_job(r, by_job.get(r.job_id, [])) for r in rows]


async def list_jobs(
    s: AsyncConnection, tenant: str, filters: dict[str, Any], before: list[str] | None, limit: int
) -> list[job_pb2.Job]:
    stmt = select(t.jobs).where(J.tenant_id == tenant)
    if filters["states"]:
        stmt = stmt.where(J.state.in_(filters["states"]))
    if filters["schedule_id"]:
        stmt = stmt.where(J.schedule_id == filters["schedule_id"])
    if filters["engine"]:
        stmt = stmt.where(J.engine == filters["engine"])
    if filters["after"]:
        stmt = stmt.where(J.create_time >= datetime.fromisoformat(filters["after"]))
    if filters["before"]:
        stmt = stmt.where(J.create_time < datetime.fromisoformat(filters["before"]))
    if before is not None:
        when = datetime.fromisoformat(before[0])
        stmt = stmt.where(
            or_(J.create_time < when, and_(J.create_time == when, J.job_id < before[1]))
        )
    stmt = stmt.order_by(J.create_time.desc(), J.job_id.desc()).limit(limit)
    return await load_jobs(s, (await s.execute(stmt)).all())


async def changes_after(s: AsyncConnection, job_id: str, version: int) -> list[rules.Change]:
    c = t.changes.c
    stmt = (
        select(t.changes, J.tenant_id)
        .join(t.jobs, J.job_id == c.job_id)
        .where(c.job_id == job_id, c.version > version)
        .order_by(c.version)
    )
    return [
        rules.Change(
            r.job_id,
            r.tenant_id,
            r.version,
            r.previous_state,
            r.state,
            r.attempt,
            r.message,
            r.change_time,
        )
        for r in (await s.execute(stmt)).all()
    ]


async def lock(
    s: AsyncConnection, job_ids: Iterable[str], *, tenant: str | None = None
) -> dict[str, rules.Job]:
    """The jobs, locked for this transaction, in id order (so batches never deadlock)."""
    stmt = select(*QUEUE_COLUMNS).where(J.job_id.in_(sorted(set(job_ids))))
    if tenant is not None:
        stmt = stmt.where(J.tenant_id == tenant)
    rows = (await s.execute(stmt.order_by(J.job_id).with_for_update())).all()
    return {r.job_id: _record(r) for r in rows}


async def specs(s: AsyncConnection, job_ids: Iterable[str]) -> dict[str, job_spec_pb2.JobSpec]:
    """The specs of these jobs: what a lease carries, and the retry policy a failure needs."""
    rows = (await s.execute(select(J.job_id, J.spec).where(J.job_id.in_(list(job_ids))))).all()
    return {r.job_id: job_spec_pb2.JobSpec.FromString(r.spec) for r in rows}


_CANDIDATES = text(
    """
    SELECT j.job_id, j.tenant_id, j.state, j.version, j.attempt, j.attempt_limit, j.priority,
           j.due_time, j.lease_worker, j.lease_deadline, j.status_message, j.update_time,
           j.finish_time, j.concurrency_key, j.concurrency_limit, j.traceparent,
           octet_length(j.spec) AS size
    FROM orchestrator.jobs AS j
    WHERE j.state = 3 AND j.due_time <= :now AND j.engine = ANY(CAST(:engines AS smallint[]))
      AND (j.concurrency_key = '' OR (
        SELECT count(*) FROM orchestrator.jobs AS r
        WHERE r.state = 4 AND r.concurrency_key <> ''
          AND r.tenant_id = j.tenant_id AND r.concurrency_key = j.concurrency_key
      ) < j.concurrency_limit)
    ORDER BY j.priority DESC, j.due_time
    LIMIT :limit
    FOR UPDATE OF j SKIP LOCKED
    """
)


async def candidates(
    s: AsyncConnection, engines: list[int], now: datetime, limit: int
) -> list[rules.Candidate]:
    """Due QUEUED jobs in queue order, locked (skipping rows others hold), leaving out jobs
    whose concurrency key is already at its cap so a busy key never blocks the rest."""
    rows = (await s.execute(_CANDIDATES, {"now": now, "engines": engines, "limit": limit})).all()
    return [rules.Candidate(_record(r), r.size) for r in rows]


async def running_per_key(
    s: AsyncConnection, keys: set[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """Serialise leasing per concurrency key across replicas, then count its RUNNING jobs.

    The transaction-scoped advisory locks are taken in one sorted order, so two pollers
    never deadlock; once held, this statement sees every lease committed before.
    """
    if not keys:
        return {}
    ordered = sorted(keys)
    params = {"tenants": [k[0] for k in ordered], "keys": [k[1] for k in ordered]}
    await s.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 7)) FROM ("
            " SELECT u.tenant || chr(31) || u.key AS k"
            " FROM unnest(CAST(:tenants AS text[]), CAST(:keys AS text[])) AS u(tenant, key)"
            " ORDER BY 1) AS sorted"
        ),
        params,
    )
    rows = await s.execute(
        text(
            "SELECT j.tenant_id, j.concurrency_key, count(*) AS n FROM orchestrator.jobs AS j"
            " JOIN unnest(CAST(:tenants AS text[]), CAST(:keys AS text[])) AS u(tenant, key)"
            " ON j.tenant_id = u.tenant AND j.concurrency_key = u.key"
            " WHERE j.state = 4 AND j.concurrency_key <> ''"
            " GROUP BY 1, 2"
        ),
        params,
    )
    return {(r.tenant_id, r.concurrency_key): r.n for r in rows}


_APPLY = text(
    """
    UPDATE orchestrator.jobs AS j SET
      state = v.state, version = v.version, attempt = v.attempt,
      attempt_limit = v.attempt_limit, due_time = v.due_time, lease_worker = v.lease_worker,
      lease_deadline = v.lease_deadline, status_message = v.status_message,
      update_time = v.update_time, finish_time = v.finish_time,
      result = COALESCE(v.result, j.result)
    FROM unnest(
      CAST(:job_id AS text[]), CAST(:state AS smallint[]), CAST(:version AS bigint[]),
      CAST(:attempt AS int[]), CAST(:attempt_limit AS int[]),
      CAST(:due_time AS timestamptz[]), CAST(:lease_worker AS text[]),
      CAST(:lease_deadline AS timestamptz[]), CAST(:status_message AS text[]),
      CAST(:update_time AS timestamptz[]), CAST(:finish_time AS timestamptz[]),
      CAST(:result AS bytea[])
    ) AS v(job_id, state, version, attempt, attempt_limit, due_time, lease_worker,
           lease_deadline, status_message, update_time, finish_time, result)
    WHERE j.job_id = v.job_id
    """
)
_APPLIED = (
    "job_id",
    "state",
    "version",
    "attempt",
    "attempt_limit",
    "due_time",
    "lease_worker",
    "lease_deadline",
    "status_message",
    "update_time",
    "finish_time",
)

_END_ATTEMPTS = text(
    """
    UPDATE orchestrator.attempts AS a SET
      finish_time = v.time, outcome = v.outcome, error_code = v.code, error_message = v.message
    FROM unnest(
      CAST(:job_id AS text[]), CAST(:number AS int[]), CAST(:outcome AS smallint[]),
      CAST(:code AS text[]), CAST(:message AS text[]), CAST(:time AS timestamptz[])
    ) AS v(job_id, number, outcome, code, message, time)
    WHERE a.job_id = v.job_id AND a.number = v.number
    """
)

_VOID_ATTEMPTS = text(
    """
    DELETE FROM orchestrator.attempts AS a
    USING unnest(CAST(:job_id AS text[]), CAST(:number AS int[])) AS v(job_id, number)
    WHERE a.job_id = v.job_id AND a.number = v.number
    """
)


async def apply(s: AsyncConnection, transitions: Sequence[rules.Transition]) -> None:
    """Write what the transitions decided to `jobs` and `attempts`: one statement per kind.

    The caller records their changes (history.record) in the same transaction.
    """
    if not transitions:
        return
    params: dict[str, list[Any]] = {name: [] for name in (*_APPLIED, "result")}
    for tr in transitions:
        for name in _APPLIED:
            params[name].append(getattr(tr.job, name))
        params["result"].append(tr.result)
    await s.execute(_APPLY, params)
    starts = [tr.attempt for tr in transitions if isinstance(tr.attempt, rules.AttemptStart)]
    ends = [tr.attempt for tr in transitions if isinstance(tr.attempt, rules.AttemptEnd)]
    voids = [tr.attempt for tr in transitions if isinstance(tr.attempt, rules.AttemptVoid)]
    if starts:
        await s.execute(
            insert(t.attempts),
            [
                {
                    "job_id": a.job_id,
                    "number": a.number,
                    "worker_id": a.worker_id,
                    "start_time": a.time,
                    "outcome": job_pb2.ATTEMPT_OUTCOME_UNSPECIFIED,
                    "error_code": "",
                    "error_message": "",
                }
                for a in starts
            ],
        )
    if ends:
        await s.execute(
            _END_ATTEMPTS,
            {
                "job_id": [a.job_id for a in ends],
                "number": [a.number for a in ends],
                "outcome": [a.outcome for a in ends],
                "code": [a.error_code for a in ends],
                "message": [a.error_message for a in ends],
                "time": [a.time for a in ends],
            },
        )
    if voids:
        await s.execute(
            _VOID_ATTEMPTS,
            {"job_id": [a.job_id for a in voids], "number": [a.number for a in voids]},
        )


async def insert_changes(s: AsyncConnection, changes: Sequence[rules.Change]) -> None:
    if changes:
        await s.execute(
            insert(t.changes),
            [
                {
                    "job_id": c.job_id,
                    "version": c.version,
                    "previous_state": c.previous_state,
                    "state": c.state,
                    "change_time": c.time,
                    "attempt": c.attempt,
                    "message": c.message,
                }
                for c in changes
            ],
        )


async def held_leases(
    s: AsyncConnection, worker: str, leases: list[rules.Lease], deadline: datetime
) -> tuple[set[rules.Lease], set[rules.Lease]]:
    """Extend the leases `worker` still holds; returns (extended, cancelled)."""
    if not leases:
        return set(), set()
    params = {
        "job_id": [x.job_id for x in leases],
        "attempt": [x.attempt for x in leases],
        "worker": worker,
        "deadline": deadline,
    }
    extended = await s.execute(
        text(
            "UPDATE orchestrator.jobs AS j SET lease_deadline = :deadline"
            " FROM unnest(CAST(:job_id AS text[]), CAST(:attempt AS int[])) AS v(job_id, attempt)"
            " WHERE j.job_id = v.job_id AND j.attempt = v.attempt AND j.state = 4"
            " AND j.lease_worker = :worker RETURNING j.job_id, j.attempt"
        ),
        params,
    )
    cancelled = await s.execute(
        text(
            "SELECT j.job_id, j.attempt FROM orchestrator.jobs AS j"
            " JOIN unnest(CAST(:job_id AS text[]), CAST(:attempt AS int[])) AS v(job_id, attempt)"
            " ON j.job_id = v.job_id AND j.attempt = v.attempt WHERE j.state = 8"
        ),
        {k: params[k] for k in ("job_id", "attempt")},
    )
    return (
        {rules.Lease(r.job_id, r.attempt) for r in extended},
        {rules.Lease(r.job_id, r.attempt) for r in cancelled},
    )


async def expired(s: AsyncConnection, now: datetime, limit: int) -> list[rules.Job]:
    stmt = (
        select(*QUEUE_COLUMNS)
        .where(J.state == rules.RUNNING, J.lease_deadline < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_record(r) for r in (await s.execute(stmt)).all()]


async def due_retries(s: AsyncConnection, now: datetime, limit: int) -> list[rules.Job]:
    stmt = (
        select(*QUEUE_COLUMNS)
        .where(J.state == rules.FAILED, J.due_time <= now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [_record(r) for r in (await s.execute(stmt)).all()]


# The finished jobs oldest first (ix_jobs_finished), each against its tenant's cutoff or the
# default one. A tenant that keeps jobs longer than the default leaves the ones it keeps in
# the range each pass walks: a cost of that tenant's volume, paid once a prune interval.
_PRUNE = text(
    """
    WITH own AS (
      SELECT * FROM unnest(CAST(:tenants AS text[]), CAST(:cutoffs AS timestamptz[]))
        AS own(tenant_id, cutoff)
    ), gone AS (
      DELETE FROM orchestrator.jobs WHERE job_id IN (
        SELECT j.job_id FROM orchestrator.jobs j LEFT JOIN own ON own.tenant_id = j.tenant_id
        WHERE j.state IN (2, 5, 7, 8)
          AND j.finish_time < CAST(:bound AS timestamptz)
          AND j.finish_time < coalesce(own.cutoff, CAST(:cutoff AS timestamptz))
        ORDER BY j.finish_time LIMIT :limit FOR UPDATE OF j SKIP LOCKED
      ) RETURNING job_id
    ), attempts AS (
      DELETE FROM orchestrator.attempts WHERE job_id IN (SELECT job_id FROM gone)
    ), changes AS (
      DELETE FROM orchestrator.changes WHERE job_id IN (SELECT job_id FROM gone)
    )
    SELECT count(*) FROM gone
    """
)


async def prune(
    s: AsyncConnection, cutoff: datetime, limit: int, tenants: Mapping[str, datetime]
) -> int:
    """Delete up to `limit` jobs that finished before their tenant's cutoff in `tenants`, or
    `cutoff` for a tenant not listed, with their history."""
    params = {
        "cutoff": cutoff,
        "bound": max([cutoff, *tenants.values()]),  # lets the index scan stop early
        "tenants": list(tenants),
        "cutoffs": list(tenants.values()),
        "limit": limit,
    }
    return int((await s.execute(_PRUNE, params)).scalar_one())
