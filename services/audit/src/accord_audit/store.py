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
from accord_audit.domain.logcheck import Entry
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


# The hashing of verification runs in PostgreSQL, beside the rows, so that the service reads
# three hashes and three verdicts per record instead of the whole record. The expressions
# are chain.body_of / payload_digest / tenant_hash and merkle.leaf_hash written in SQL
# (int4send and int8send are big-endian); the tests of valid and tampered logs hold them
# to the Python definitions.
_BODY = " || ".join(
    [
        *(
            _prefixed(f"convert_to({name}, 'UTF8')")
            for name in ("event_id", "event_type", "tenant_id", "aggregate_type", "aggregate_id")
        ),
        "int8send((extract(epoch FROM event_time) * 1000000)::bigint)",
        _prefixed("envelope"),
    ]
)
_ENTRIES = f"""
SELECT tenant_index, tenant_prev_hash, tenant_hash, erase_time IS NOT NULL,
       erase_time IS NOT NULL OR sha256({_BODY}) = payload_digest,
       sha256(tenant_prev_hash || int8send(tenant_index) || payload_digest) = tenant_hash,
       sha256('\\x00'::bytea || tenant_hash)
FROM audit.records
WHERE tenant_id = $1 AND tenant_index >= $2 AND tenant_index < $3
ORDER BY tenant_index
LIMIT $4
"""  # noqa: S608 - built from constants only
_LEAVES = """
SELECT node_index, hash FROM audit.tree_nodes
WHERE tenant_id = $1 AND level = 0 AND node_index >= $2 AND node_index < $3
"""


async def entries(
    session: AsyncSession, tenant: str, start: int, end: int, limit: int
) -> list[Entry]:
    """Up to `limit` of the tenant's records start <= index < end, checked against their
    digests and chain links by PostgreSQL, with the Merkle leaves stored for them.

    Two range scans, not a join: each is one index range whatever the planner knows."""
    conn = await driver(session)
    rows = await conn.fetch(_ENTRIES, tenant, start, end, limit)
    if not rows:
        return []
    leaves = dict(await conn.fetch(_LEAVES, tenant, start, rows[-1][0] + 1))
    return [Entry(*row, leaves.get(row[0])) for row in rows]  # type: ignore[call-arg]


async def tenant_hash_at(session: AsyncSession, tenant: str, index: int) -> bytes | None:
    stmt = select(c.tenant_hash).where(c.tenant_id == tenant, c.tenant_index == index)
    found: bytes | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


_SIZE_AND_HASH = """
SELECT (SELECT size FROM audit.logs WHERE tenant_id = $1),
       (SELECT tenant_hash FROM audit.records WHERE tenant_id = $1 AND tenant_index = $2)
"""


async def size_and_hash(session: AsyncSession, tenant: str, index: int) -> tuple[int, bytes | None]:
    """The tenant log's size and the hash of its record at `index` (None: no such record),
    in one round trip: the two things every proof checks first."""
    row = await (await driver(session)).fetchrow(_SIZE_AND_HASH, tenant, index)
    return (row[0] or 0), row[1]
