"""No-op jobs by the hundred, and the ledger check that each ran exactly once and was audited.

The check reads the services' own tables: `orchestrator.jobs`, `changes` and `attempts`,
and `audit.records`, whose envelopes carry each job change's version.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2
from accord.events.v1 import envelope_pb2, job_events_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord_kit.stack import Stack
from accord_kit.testing import as_tenant, retry_unavailable

TENANT = "load"
MD = as_tenant(TENANT)
MAX_BATCH = 1000  # BatchCreateJobsRequest.specs: max_items
SUCCEEDED = job_pb2.JOB_STATE_SUCCEEDED
TERMINAL = (
    job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_STATE_REJECTED,
    job_pb2.JOB_STATE_DEAD_LETTER,
    job_pb2.JOB_STATE_CANCELLED,
)
Key = tuple[str, int, int]  # job id, change version, state
JOB_RECORDS = "FROM audit.records WHERE aggregate_type = 'job' AND aggregate_id = ANY($1)"


def seconds(value: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


def noop(delay: float = 0.0) -> job_spec_pb2.JobSpec:
    """A job that waits `delay` seconds and touches nothing; policy allows it (no targets).

    Retried quickly and often: a chaos test expects every one to succeed in the end.
    """
    return job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[job_spec_pb2.Step(wait_for=job_spec_pb2.WaitForStep(delay=seconds(delay)))],
        retry_policy=job_spec_pb2.RetryPolicy(
            max_attempts=20, initial_backoff=seconds(0.2), max_backoff=seconds(2)
        ),
    )


async def submit(
    stack: Stack,
    n: int,
    *,
    tag: str,
    delay: float = 0.0,
    batch: int = MAX_BATCH,
    retried: list[grpc.StatusCode] | None = None,
) -> list[str]:
    """`n` no-op jobs through BatchCreateJobs; their ids, in order.

    Batches are dealt round-robin to the orchestrators, each working through its own
    one at a time; a batch that fails UNAVAILABLE is sent again with the same request_id
    (and the code goes to `retried`).
    """
    on_retry = retried.append if retried is not None else lambda code: None
    sizes = [min(batch, n - start) for start in range(0, n, batch)]
    targets = stack.targets("orchestrator")
    spec = noop(delay)

    async def lane(target: str, numbers: range) -> dict[int, list[str]]:
        created = {}
        async with grpc.aio.insecure_channel(target) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            for i in numbers:
                request = job_service_pb2.BatchCreateJobsRequest(
                    request_id=f"{tag}-{i}", specs=[spec] * sizes[i]
                )
                call = functools.partial(stub.BatchCreateJobs, request, metadata=MD, timeout=60)
                reply = await retry_unavailable(call, on_retry=on_retry)
                assert all(j.state != job_pb2.JOB_STATE_REJECTED for j in reply.jobs)
                created[i] = [j.job_id for j in reply.jobs]
        return created

    lanes = await asyncio.gather(
        *(lane(t, range(k, len(sizes), len(targets))) for k, t in enumerate(targets))
    )
    by_batch = {i: ids for created in lanes for i, ids in created.items()}
    return [job_id for i in sorted(by_batch) for job_id in by_batch[i]]


def connect(stack: Stack) -> Any:
    """An asyncpg connection (an awaitable) to the stack's database."""
    url = stack.env["ACCORD_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    return asyncpg.connect(url)


async def poll(conn: Any, query: str, *args: object) -> Any:
    """One value, or None while the database is unreachable (a chaos test restarts it)."""
    try:
        return await conn.fetchval(query, *args)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return None


async def settle(stack: Stack, job_ids: Sequence[str], timeout: float) -> None:
    """Wait until every job is in a terminal state."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done: int | None = None
    while True:
        try:
            conn = await connect(stack)
        except (OSError, asyncpg.PostgresError):
            conn = None
        if conn is not None:
            try:
                done = await poll(
                    conn,
                    "SELECT count(*) FROM orchestrator.jobs "
                    "WHERE job_id = ANY($1) AND state = ANY($2)",
                    list(job_ids),
                    list(TERMINAL),
                )
            finally:
                await conn.close()
        if done == len(job_ids):
            return
        assert loop.time() < deadline, f"{done} of {len(job_ids)} jobs finished in {timeout:g}s"
        await asyncio.sleep(0.5)


async def assert_exactly_once(stack: Stack, job_ids: Sequence[str], timeout: float = 120) -> None:
    """Every job SUCCEEDED once, by one successful attempt, and each change is audited once."""
    conn = await connect(stack)
    try:
        ids = list(job_ids)
        rows = await conn.fetch(
            "SELECT job_id, state FROM orchestrator.jobs WHERE tenant_id = $1", TENANT
        )
        states = {r["job_id"]: r["state"] for r in rows}
        assert len(ids) == len(set(ids)), "a batch returned a job twice"
        extra = set(states) - set(ids)
        assert not extra, _sample("jobs stored but never returned to the client", extra)
        assert len(states) == len(ids), _sample("accepted jobs not stored", set(ids) - set(states))
        failed = [j for j in ids if states[j] != SUCCEEDED]
        assert not failed, await _report(conn, "not SUCCEEDED", failed)
        successes = await _counts(
            conn,
            "SELECT job_id, count(*) FROM orchestrator.changes "
            "WHERE job_id = ANY($1) AND state = $2 GROUP BY job_id",
            ids,
            SUCCEEDED,
        )
        doubled = [j for j in ids if successes.get(j) != 1]
        assert not doubled, await _report(conn, "not exactly one SUCCEEDED change", doubled)
        won = await _counts(
            conn,
            "SELECT job_id, count(*) FROM orchestrator.attempts "
            "WHERE job_id = ANY($1) AND outcome = $2 GROUP BY job_id",
            ids,
            job_pb2.ATTEMPT_OUTCOME_SUCCEEDED,
        )
        twice = [j for j in ids if won.get(j) != 1]
        assert not twice, await _report(conn, "not exactly one successful attempt", twice)
        await _assert_audited(conn, ids, timeout)
    finally:
        await conn.close()


async def _assert_audited(conn: Any, ids: list[str], timeout: float) -> None:
    """One audit record per job change: same job, version and state, none twice."""
    changes = {
        (r["job_id"], r["version"], r["state"])
        for r in await conn.fetch(
            "SELECT job_id, version, state FROM orchestrator.changes WHERE job_id = ANY($1)", ids
        )
    }
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (seen := await conn.fetchval(f"SELECT count(*) {JOB_RECORDS}", ids)) < len(changes):
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.5)
    records = await conn.fetch(f"SELECT envelope {JOB_RECORDS}", ids)
    audited = collections.Counter(_key(r["envelope"]) for r in records)
    twice = [k for k, n in audited.items() if n > 1]
    assert not twice, _sample("changes audited more than once", twice)
    missing = changes - set(audited)
    assert not missing, _sample(
        f"changes not audited after {timeout:g}s ({seen} of {len(changes)} records)", missing
    )
    made_up = set(audited) - changes
    assert not made_up, _sample("audited changes that never happened", made_up)


def _key(envelope: bytes) -> Key:
    event = envelope_pb2.EventEnvelope.FromString(envelope)
    change = job_events_pb2.JobStateChanged()
    assert event.payload.Unpack(change), event.event_type
    return change.job_id, change.change.version, change.change.state


async def _counts(conn: Any, query: str, *args: object) -> dict[str, int]:
    return {r[0]: r[1] for r in await conn.fetch(query, *args)}


def _sample(what: str, items: Iterable[object], n: int = 5) -> str:
    found = sorted(items, key=str)
    return f"{len(found)} {what}, e.g. {found[:n]}"


async def _report(conn: Any, what: str, job_ids: list[str], n: int = 3) -> str:
    """The jobs' count and, for a few, every change and attempt: what a reader needs to debug."""
    lines = [f"{len(job_ids)} jobs {what}"]
    for job_id in job_ids[:n]:
        changes = await conn.fetch(
            "SELECT version, previous_state, state, attempt, message FROM orchestrator.changes "
            "WHERE job_id = $1 ORDER BY version",
            job_id,
        )
        attempts = await conn.fetch(
            "SELECT number, worker_id, outcome, error_code FROM orchestrator.attempts "
            "WHERE job_id = $1 ORDER BY number",
            job_id,
        )
        lines.append(f"job {job_id}:")
        lines += [
            f"  change v{c['version']} {_state(c['previous_state'])} -> {_state(c['state'])} "
            f"attempt {c['attempt']} {c['message']!r}"
            for c in changes
        ]
        lines += [
            f"  attempt {a['number']} by {a['worker_id']}: outcome {a['outcome']} {a['error_code']}"
            for a in attempts
        ]
    return "\n".join(lines)


def _state(value: int) -> str:
    return job_pb2.JobState.Name(value).removeprefix("JOB_STATE_")  # type: ignore[arg-type]
