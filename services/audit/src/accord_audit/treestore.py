"""SQL for the tenant logs' heads, Merkle tree nodes, checkpoints and checkpoint keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from accord_audit import store
from accord_audit import tables as t
from accord_audit.domain.checkpoints import Checkpoint
from accord_audit.domain.logcheck import Level
from accord_audit.domain.merkle import Node


async def heads(session: AsyncSession, tenants: Iterable[str]) -> dict[str, tuple[int, bytes]]:
    """Size and head hash of each of these tenants' logs that has records."""
    stmt = select(t.logs).where(t.logs.c.tenant_id.in_(list(tenants)))
    return {r.tenant_id: (r.size, r.head_hash) for r in (await session.execute(stmt)).all()}


async def size(session: AsyncSession, tenant: str) -> int:
    stmt = select(t.logs.c.size).where(t.logs.c.tenant_id == tenant)
    found: int | None = (await session.execute(stmt)).scalar_one_or_none()
    return found or 0


async def save_heads(session: AsyncSession, moved: Mapping[str, tuple[int, bytes]]) -> None:
    if not moved:
        return
    rows = [{"tenant_id": k, "size": s, "head_hash": h} for k, (s, h) in moved.items()]
    stmt = insert(t.logs).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.logs.c.tenant_id],
        set_={"size": stmt.excluded.size, "head_hash": stmt.excluded.head_hash},
    )
    await session.execute(stmt)


# LATERAL with LIMIT keeps this a loop of primary-key lookups, one per node asked for: a
# generic plan of a plain join may scan the whole tree instead.
_NODES = """
SELECT w.tenant_id, w.level, w.node_index, n.hash
FROM unnest($1::text[], $2::smallint[], $3::bigint[]) AS w(tenant_id, level, node_index)
CROSS JOIN LATERAL (
  SELECT hash FROM audit.tree_nodes
  WHERE tenant_id = w.tenant_id AND level = w.level AND node_index = w.node_index
  LIMIT 1
) AS n
"""


async def nodes(
    session: AsyncSession, wanted: Mapping[str, Iterable[Node]]
) -> dict[str, dict[Node, bytes]]:
    """The stored nodes asked for, per tenant; a node not stored is absent from the answer.

    One statement whatever the number of nodes (arrays, not a list of literals), so it is
    prepared once and a proof costs one round trip.
    """
    keys = [(tenant, lv, ix) for tenant, coords in wanted.items() for lv, ix in coords]
    found: dict[str, dict[Node, bytes]] = {tenant: {} for tenant in wanted}
    if not keys:
        return found
    tenants, levels, indexes = (list(column) for column in zip(*keys, strict=True))
    rows = await (await store.driver(session)).fetch(_NODES, tenants, levels, indexes)
    for tenant, level, index, digest in rows:
        found[tenant][(level, index)] = digest
    return found


# The stored nodes over leaves [$2, $3), level by level in index order (the primary key's
# order), each right child hashed with its left sibling (lag) into the parent they make; per
# level, the digest of the stored hashes and of the recomputed parents, both in index order.
# Level L's parents must then be level L + 1's stored nodes, whole and in order.
_LEVELS = """
SELECT level, count(*), sha256(string_agg(hash, ''::bytea)), sha256(string_agg(parent, ''::bytea))
FROM (
  SELECT level, hash,
         CASE WHEN node_index & 1 = 1 AND lag(level) OVER w = level
                   AND lag(node_index) OVER w = node_index - 1
              THEN sha256('\\x01'::bytea || lag(hash) OVER w || hash) END AS parent
  FROM audit.tree_nodes
  WHERE tenant_id = $1 AND (node_index << level) >= $2 AND ((node_index + 1) << level) <= $3
  WINDOW w AS (ORDER BY level, node_index)
) AS pairs
GROUP BY level
"""

# The nodes of one level over leaves [$3, $4) whose children are missing or hash otherwise:
# found only once a level is known to be wrong, by primary key.
_BAD_NODES = """
SELECT p.node_index
FROM audit.tree_nodes p
LEFT JOIN audit.tree_nodes l
  ON l.tenant_id = p.tenant_id AND l.level = p.level - 1 AND l.node_index = 2 * p.node_index
LEFT JOIN audit.tree_nodes r
  ON r.tenant_id = p.tenant_id AND r.level = p.level - 1 AND r.node_index = 2 * p.node_index + 1
WHERE p.tenant_id = $1 AND p.level = $2
  AND (p.node_index << p.level) >= $3 AND ((p.node_index + 1) << p.level) <= $4
  AND p.hash IS DISTINCT FROM sha256('\\x01'::bytea || l.hash || r.hash)
ORDER BY p.node_index
LIMIT 1
"""


async def levels(session: AsyncSession, tenant: str, start: int, end: int) -> list[Level]:
    """Each level of the tenant's stored tree over leaves [start, end), in one pass in the
    primary key's order (store.streaming: the planner would rather sort the table)."""
    await store.streaming(session)
    rows = await (await store.driver(session)).fetch(
        _LEVELS, tenant, start, end, timeout=store.CHECK_TIMEOUT
    )
    return [Level(*row) for row in rows]


async def bad_node(
    session: AsyncSession, tenant: str, level: int, start: int, end: int
) -> int | None:
    """The first node of `level` over leaves [start, end) that its children do not make."""
    found: int | None = await (await store.driver(session)).fetchval(
        _BAD_NODES, tenant, level, start, end, timeout=store.CHECK_TIMEOUT
    )
    return found


# What a proof reads, in one statement: the log's size, the tenant hash of the record at $2
# (the proven leaf; NULL when absent) and the stored nodes asked for, in the order asked
# (NULL for one not stored), each by primary key as in _NODES.
_PROOF = """
SELECT (SELECT size FROM audit.logs WHERE tenant_id = $1),
       (SELECT tenant_hash FROM audit.records WHERE tenant_id = $1 AND tenant_index = $2),
       array(
         SELECT n.hash
         FROM unnest($3::smallint[], $4::bigint[]) WITH ORDINALITY AS w(level, node_index, at)
         LEFT JOIN LATERAL (
           SELECT hash FROM audit.tree_nodes
           WHERE tenant_id = $1 AND level = w.level AND node_index = w.node_index
           LIMIT 1
         ) AS n ON true
         ORDER BY w.at
       )
"""


async def proof_read(
    reads: asyncpg.Pool, tenant: str, index: int, wanted: Iterable[Node]
) -> tuple[int, bytes | None, dict[Node, bytes]]:
    """(the log's size, the tenant hash of its record at `index` or None, the stored nodes
    of `wanted`) in one round trip on a plain connection (db.read_pool)."""
    keys = sorted(wanted)
    levels, indexes = [lv for lv, _ in keys], [ix for _, ix in keys]
    async with reads.acquire() as conn:
        size, leaf, hashes = await conn.fetchrow(_PROOF, tenant, index, levels, indexes)
    found = {key: digest for key, digest in zip(keys, hashes, strict=True) if digest is not None}
    return size or 0, leaf, found


_INDEX_OF = "SELECT tenant_index FROM audit.records WHERE tenant_id = $1 AND event_id = $2"


async def index_of(reads: asyncpg.Pool, tenant: str, event_id: str) -> int | None:
    """The tenant-log index of the tenant's record of `event_id`, if there is one."""
    async with reads.acquire() as conn:
        found: int | None = await conn.fetchval(_INDEX_OF, tenant, event_id)
    return found


async def insert_nodes(session: AsyncSession, added: Mapping[str, Mapping[Node, bytes]]) -> None:
    rows = [
        (tenant, lv, ix, digest)
        for tenant, new in added.items()
        for (lv, ix), digest in new.items()
    ]
    if rows:
        await (await store.driver(session)).copy_records_to_table(
            t.tree_nodes.name,
            schema_name=t.SCHEMA,
            columns=("tenant_id", "level", "node_index", "hash"),
            records=rows,
        )


def _checkpoint(row: Row, log_id: str) -> Checkpoint:  # type: ignore[type-arg]
    return Checkpoint(
        log_id,
        row.tree_size,
        row.root_hash,
        row.checkpoint_time,
        row.note,
        row.signature,
        row.key_id,
    )


async def latest_checkpoint(
    session: AsyncSession, tenant: str, log_id: str, *, at_most: int | None = None
) -> Checkpoint | None:
    """The checkpoint of the largest tree size (of at most `at_most` records, if given)."""
    k = t.checkpoints.c
    stmt = select(t.checkpoints).where(k.tenant_id == tenant)
    if at_most is not None:
        stmt = stmt.where(k.tree_size <= at_most)
    stmt = stmt.order_by(k.tree_size.desc()).limit(1)
    row = (await session.execute(stmt)).one_or_none()
    return _checkpoint(row, log_id) if row else None


async def checkpoint_at(
    session: AsyncSession, tenant: str, log_id: str, tree_size: int
) -> Checkpoint | None:
    k = t.checkpoints.c
    stmt = select(t.checkpoints).where(k.tenant_id == tenant, k.tree_size == tree_size)
    row = (await session.execute(stmt)).one_or_none()
    return _checkpoint(row, log_id) if row else None


async def save_checkpoint(session: AsyncSession, tenant: str, cp: Checkpoint) -> None:
    """Store a checkpoint; one of the same size already stored wins (it is just as valid)."""
    stmt = insert(t.checkpoints).values(
        tenant_id=tenant,
        tree_size=cp.tree_size,
        root_hash=cp.root_hash,
        checkpoint_time=cp.time,
        note=cp.note,
        signature=cp.signature,
        key_id=cp.key_id,
    )
    await session.execute(stmt.on_conflict_do_nothing())


async def logs_behind(session: AsyncSession, limit: int) -> list[str]:
    """Tenants whose log has grown past its latest checkpoint."""
    k = t.checkpoints.c
    signed = (
        select(func.max(k.tree_size)).where(k.tenant_id == t.logs.c.tenant_id).scalar_subquery()
    )
    stmt = (
        select(t.logs.c.tenant_id)
        .where(t.logs.c.size > func.coalesce(signed, 0))
        .order_by(t.logs.c.tenant_id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def save_key(session: AsyncSession, key_id: str, public: bytes, now: datetime) -> None:
    stmt = insert(t.checkpoint_keys).values(key_id=key_id, public_key=public, first_use_time=now)
    await session.execute(stmt.on_conflict_do_nothing())


async def keys(session: AsyncSession) -> list[tuple[str, bytes, datetime]]:
    k = t.checkpoint_keys.c
    stmt = select(k.key_id, k.public_key, k.first_use_time).order_by(k.first_use_time, k.key_id)
    return [(r.key_id, r.public_key, r.first_use_time) for r in (await session.execute(stmt)).all()]
