"""SQL for the tenant logs' heads, Merkle tree nodes, checkpoints and checkpoint keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from accord_audit import tables as t
from accord_audit.domain.checkpoints import Checkpoint
from accord_audit.domain.merkle import Node

# Node keys per query: bounds the statement's size, not the number of nodes.
NODE_CHUNK = 2000


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


async def nodes(
    session: AsyncSession, wanted: Mapping[str, Iterable[Node]]
) -> dict[str, dict[Node, bytes]]:
    """The stored nodes asked for, per tenant; a node not stored is absent from the answer."""
    keys = [(tenant, lv, ix) for tenant, coords in wanted.items() for lv, ix in coords]
    found: dict[str, dict[Node, bytes]] = {tenant: {} for tenant in wanted}
    n = t.tree_nodes.c
    for start in range(0, len(keys), NODE_CHUNK):
        chunk = keys[start : start + NODE_CHUNK]
        stmt = select(n.tenant_id, n.level, n.node_index, n.hash).where(
            tuple_(n.tenant_id, n.level, n.node_index).in_(chunk)
        )
        for r in (await session.execute(stmt)).all():
            found[r.tenant_id][(r.level, r.node_index)] = r.hash
    return found


async def insert_nodes(session: AsyncSession, added: Mapping[str, Mapping[Node, bytes]]) -> None:
    rows = [
        {"tenant_id": tenant, "level": lv, "node_index": ix, "hash": digest}
        for tenant, new in added.items()
        for (lv, ix), digest in new.items()
    ]
    if rows:
        await session.execute(insert(t.tree_nodes), rows)


async def leaves(session: AsyncSession, tenant: str, start: int, end: int) -> dict[int, bytes]:
    """The stored leaf hashes (level 0) of the tenant's records start <= index < end."""
    n = t.tree_nodes.c
    stmt = select(n.node_index, n.hash).where(
        n.tenant_id == tenant, n.level == 0, n.node_index >= start, n.node_index < end
    )
    return {r.node_index: r.hash for r in (await session.execute(stmt)).all()}


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


async def latest_checkpoint(session: AsyncSession, tenant: str, log_id: str) -> Checkpoint | None:
    k = t.checkpoints.c
    stmt = select(t.checkpoints).where(k.tenant_id == tenant).order_by(k.tree_size.desc()).limit(1)
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


async def tenants(session: AsyncSession) -> list[str]:
    return list((await session.execute(select(t.logs.c.tenant_id))).scalars())


async def save_key(session: AsyncSession, key_id: str, public: bytes, now: datetime) -> None:
    stmt = insert(t.checkpoint_keys).values(key_id=key_id, public_key=public, first_use_time=now)
    await session.execute(stmt.on_conflict_do_nothing())


async def keys(session: AsyncSession) -> list[tuple[str, bytes, datetime]]:
    k = t.checkpoint_keys.c
    stmt = select(k.key_id, k.public_key, k.first_use_time).order_by(k.first_use_time, k.key_id)
    return [(r.key_id, r.public_key, r.first_use_time) for r in (await session.execute(stmt)).all()]
