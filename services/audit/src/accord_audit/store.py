"""SQL for the audit log; rows in, domain records out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from accord_audit import tables as t
from accord_audit.domain.logcheck import ERASED_LISTED, Bad, Fault, Part
from accord_audit.domain.records import Event, Record, TenantLink

# Key of the transaction-scoped advisory lock every append takes: it serialises appends
# from all replicas, so indexes never collide and the chain never forks. ("audit.ap")
APPEND_LOCK = 0x61756469742E6170

c = t.records.c


@dataclass(frozen=True)
class RecordFilter:
    """Which of a tenant's records a list or stream returns; empty fields match everything."""

    tenant_id: str
    event_type_prefix: str = ""
    aggregate_id: str = ""
    event_time_after: datetime | None = None
    event_time_before: datetime | None = None


def _record(row: Row) -> Record:  # type: ignore[type-arg]
    event = Event(
        event_id=row.event_id,
        event_type=row.event_type,
        tenant_id=row.tenant_id,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        event_time=row.event_time,
        envelope=row.envelope,
    )
    link = TenantLink(row.tenant_index, row.payload_digest, row.tenant_prev_hash, row.tenant_hash)
    return Record(
        row.record_index, event, row.append_time, row.prev_hash, row.hash, link, row.erase_time
    )


async def lock_for_append(session: AsyncSession) -> None:
    """Hold the append lock until the transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK})


async def head(session: AsyncSession) -> tuple[int, bytes] | None:
    """Index and hash of the last record, or None for an empty log."""
    stmt = select(c.record_index, c.hash).order_by(c.record_index.desc()).limit(1)
    row = (await session.execute(stmt)).one_or_none()
    return (row.record_index, row.hash) if row else None


async def size(session: AsyncSession) -> int:
    """Records in the log: one past the last index."""
    last = (await session.execute(select(func.max(c.record_index)))).scalar_one_or_none()
    return 0 if last is None else int(last) + 1


async def existing_event_ids(session: AsyncSession, event_ids: list[str]) -> set[str]:
    stmt = select(c.event_id).where(c.event_id.in_(event_ids))
    return set((await session.execute(stmt)).scalars())


async def driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction: for COPY and hot queries."""
    raw = await (await session.connection()).get_raw_connection()
    found = raw.driver_connection
    assert found is not None
    return found


RECORD_COLUMNS = (
    "record_index",
    "event_id",
    "event_type",
    "tenant_id",
    "aggregate_type",
    "aggregate_id",
    "event_time",
    "append_time",
    "envelope",
    "prev_hash",
    "hash",
    "tenant_index",
    "payload_digest",
    "tenant_prev_hash",
    "tenant_hash",
)


async def insert_records(session: AsyncSession, records: list[Record]) -> None:
    """COPY the records in: a batch costs one round trip and no statement compiling."""
    if not records:
        return
    rows = [
        (
            r.index,
            r.event.event_id,
            r.event.event_type,
            r.event.tenant_id,
            r.event.aggregate_type,
            r.event.aggregate_id,
            r.event.event_time,
            r.append_time,
            r.event.envelope,
            r.prev_hash,
            r.hash,
            r.link.index,
            r.link.payload_digest,
            r.link.prev_hash,
            r.link.hash,
        )
        for r in records
    ]
    await (await driver(session)).copy_records_to_table(
        t.records.name, schema_name=t.SCHEMA, columns=RECORD_COLUMNS, records=rows
    )


async def get_by_index(
    session: AsyncSession, tenant: str, index: int, *, tenant_log: bool = False
) -> Record | None:
    """The tenant's record at `index` of the log of all tenants, or of its own log."""
    column = c.tenant_index if tenant_log else c.record_index
    stmt = select(t.records).where(c.tenant_id == tenant, column == index)
    row = (await session.execute(stmt)).one_or_none()
    return _record(row) if row else None


async def get_by_event_id(session: AsyncSession, tenant: str, event_id: str) -> Record | None:
    stmt = select(t.records).where(c.tenant_id == tenant, c.event_id == event_id)
    row = (await session.execute(stmt)).one_or_none()
    return _record(row) if row else None


def _filtered(f: RecordFilter) -> Select:  # type: ignore[type-arg]
    stmt = select(t.records).where(c.tenant_id == f.tenant_id)
    if f.event_type_prefix:
        stmt = stmt.where(c.event_type.startswith(f.event_type_prefix, autoescape=True))
    if f.aggregate_id:
        stmt = stmt.where(c.aggregate_id == f.aggregate_id)
    if f.event_time_after is not None:
        stmt = stmt.where(c.event_time >= f.event_time_after)
    if f.event_time_before is not None:
        stmt = stmt.where(c.event_time < f.event_time_before)
    return stmt


async def list_records(
    session: AsyncSession, f: RecordFilter, from_index: int, limit: int, *, tenant_log: bool = False
) -> list[Record]:
    """Up to `limit` matching records at or after `from_index`, in log order; indexes are of
    the log of all tenants, or with `tenant_log` of the tenant's own."""
    column = c.tenant_index if tenant_log else c.record_index
    stmt = _filtered(f).where(column >= from_index).order_by(column).limit(limit)
    return [_record(r) for r in (await session.execute(stmt)).all()]


async def tenant_range(
    session: AsyncSession, tenant: str, start: int, end: int, limit: int
) -> list[Record]:
    """Up to `limit` of the tenant's records with start <= tenant index < end, in order."""
    stmt = (
        select(t.records)
        .where(c.tenant_id == tenant, c.tenant_index >= start, c.tenant_index < end)
        .order_by(c.tenant_index)
        .limit(limit)
    )
    return [_record(r) for r in (await session.execute(stmt)).all()]


async def erase_before(session: AsyncSession, tenant: str, before: datetime, now: datetime) -> int:
    """Erase the payload of the tenant's records appended before `before`; how many."""
    stmt = (
        update(t.records)
        .where(c.tenant_id == tenant, c.append_time < before, c.erase_time.is_(None))
        .values(aggregate_id="", envelope=b"", erase_time=now)
    )
    result = await session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]


_LOG_RANGE = """
SELECT record_index, event_id, event_type, tenant_id, aggregate_type, aggregate_id, event_time,
       envelope, append_time, prev_hash, hash, erase_time
FROM audit.records
WHERE record_index >= $1 AND record_index < $2
ORDER BY record_index
LIMIT $3
"""


async def log_range(session: AsyncSession, start: int, end: int, limit: int) -> list[Record]:
    """Up to `limit` records of every tenant with start <= index < end, in log order: what
    the operator's verification reads, so built from the driver's rows by position."""
    rows = await (await driver(session)).fetch(_LOG_RANGE, start, end, limit)
    return [Record(r[0], Event(*r[1:8]), r[8], r[9], r[10], None, r[11]) for r in rows]


async def hash_at(session: AsyncSession, index: int) -> bytes | None:
    stmt = select(c.hash).where(c.record_index == index)
    found: bytes | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


def _prefixed(column: str) -> str:
    return f"int4send(octet_length({column})) || {column}"


# The whole check of a verification runs in PostgreSQL, beside the rows, so that the service
# reads one row per part of the range instead of the records. The expressions are
# chain.body_of / payload_digest / tenant_hash and merkle.leaf_hash written in SQL (int4send
# and int8send are big-endian); the tests of valid and tampered logs hold them to the Python
# definitions.
_BODY = " || ".join(
    [
        *(
            _prefixed(f"convert_to(r.{name}, 'UTF8')")
            for name in ("event_id", "event_type", "tenant_id", "aggregate_type", "aggregate_id")
        ),
        "int8send((extract(epoch FROM r.event_time) * 1000000)::bigint)",
        _prefixed("r.envelope"),
    ]
)
# One part of a tenant log's range, checked in one streaming pass in index order: each row
# against the row before it (lag: its index and hash) or, for the first, the record before
# the part (or $4 when given), against its own payload digest, chained hash and stored leaf
# (a merge join of two index range scans). Only the first failure comes back, as
# [index, fault, erased records before it, erased itself], with the counts and the first
# erased indexes. The faults are logcheck.Fault, checked in that order.
_CHECK_PART = f"""
SELECT count(*), count(*) FILTER (WHERE erased),
       min(ARRAY[CASE fault WHEN 1 THEN expected ELSE ix END, fault,
                 erased_through - erased::int, erased::int]) FILTER (WHERE fault IS NOT NULL),
       array_agg(ix) FILTER (WHERE erased AND erased_through <= $5)
FROM (
  SELECT r.tenant_index AS ix, r.erase_time IS NOT NULL AS erased,
         coalesce(lag(r.tenant_index) OVER w + 1, $2) AS expected,
         CASE
           WHEN r.tenant_index <> coalesce(lag(r.tenant_index) OVER w + 1, $2) THEN 1
           WHEN r.tenant_prev_hash <> coalesce(lag(r.tenant_hash) OVER w, $4::bytea, (
             SELECT tenant_hash FROM audit.records
             WHERE tenant_id = $1 AND tenant_index = $2 - 1)) THEN 2
           WHEN r.erase_time IS NULL AND sha256({_BODY}) <> r.payload_digest THEN 3
           WHEN sha256(r.tenant_prev_hash || int8send(r.tenant_index) || r.payload_digest)
                <> r.tenant_hash THEN 4
           WHEN n.hash IS DISTINCT FROM sha256('\\x00'::bytea || r.tenant_hash) THEN 5
         END::bigint AS fault,
         count(*) FILTER (WHERE r.erase_time IS NOT NULL) OVER w AS erased_through
  FROM audit.records r
  LEFT JOIN audit.tree_nodes n
    ON n.tenant_id = r.tenant_id AND n.level = 0 AND n.node_index = r.tenant_index
  WHERE r.tenant_id = $1 AND r.tenant_index >= $2 AND r.tenant_index < $3
  WINDOW w AS (ORDER BY r.tenant_index ROWS UNBOUNDED PRECEDING)
) AS checked
"""  # noqa: S608 - built from constants only


# Seconds one statement of a verification may run (a part of the range, or the tree over it):
# longer than other statements may, on a loaded machine.
CHECK_TIMEOUT = 600.0

# A check reads its rows in index order and keeps nothing: the plan must be index scans,
# merge-joined. Without this the planner may pick a sort or a hash of the range for a generic
# plan of a sub-range (which spill to disk at these sizes), or, before a new table has its
# statistics, a nested loop that compares every record with every leaf.
_STREAMING = text(
    "SELECT set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true),"
    " set_config('enable_nestloop', 'off', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)


async def streaming(session: AsyncSession) -> None:
    """Plan the rest of this transaction's queries as one pass over indexes (_STREAMING).

    Through the session, so that its transaction has begun: the settings end with it."""
    await session.execute(_STREAMING)


async def check_part(
    session: AsyncSession, tenant: str, start: int, end: int, anchor: bytes | None
) -> Part:
    """Records start <= index < end of the tenant's log, checked by PostgreSQL in one pass.

    `anchor` is the hash the record at `start` must chain to; None means the stored hash of
    the record before it (that record itself belongs to the part before)."""
    await streaming(session)
    conn = await driver(session)
    rows, erased, bad, listed = await conn.fetchrow(
        _CHECK_PART, tenant, start, end, anchor, ERASED_LISTED, timeout=CHECK_TIMEOUT
    )
    found = None
    if bad is not None:
        found = Bad(bad[0], Fault(bad[1]), bad[2], bool(bad[3]))
    elif rows < end - start:  # every row followed the one before: the rest are missing
        found = Bad(start + rows, Fault.MISSING, erased, False)
    return Part(start, end, rows, erased, sorted(listed or []), found)


async def tenant_hash_at(session: AsyncSession, tenant: str, index: int) -> bytes | None:
    stmt = select(c.tenant_hash).where(c.tenant_id == tenant, c.tenant_index == index)
    found: bytes | None = (await session.execute(stmt)).scalar_one_or_none()
    return found
