"""`request_id` idempotency, atomic: one transaction at a time per tenant and request id.

A mutating call with a request id first claims it for its transaction, then looks for an
earlier call's result, and only then writes. The claim is a transaction-scoped PostgreSQL
advisory lock on the (scope, tenant, request id) key, so concurrent calls with the same id
run that look-then-write one after another: the second sees what the first committed and
returns it, instead of racing it to a unique constraint (which ended as INTERNAL). The lock
is released when the transaction ends, committed or not. Keys that happen to share a hash
only wait for each other; nothing else is affected.

A create finds its earlier result by the request id stored on the resource it made. Every
other mutating call keeps its outcome in its service's `outcomes` table instead, written in
the same transaction as its change (`recall`, then the work, then `keep`):
a repeat within `RETENTION` gets the first call's answer and changes nothing; the same id
with a different request (another RPC, another target, other fields) is ALREADY_EXISTS, as
for the creates. A call that fails writes nothing, so its repeat runs afresh.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from google.protobuf.message import Message
from sqlalchemy import (
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    delete,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from accord_kit.errors import AlreadyExists

_CLAIM = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
# How long an outcome answers repeats of its request id; after it, the id is free again.
RETENTION = timedelta(hours=24)
# Expired outcomes removed by each call that keeps one: the table stays near a day's calls.
PRUNE_BATCH = 100
M = TypeVar("M", bound=Message)
Conn = AsyncConnection | AsyncSession


class Asked(Protocol):
    """A request of a mutating call: any message with a `request_id` field."""

    request_id: str

    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...  # noqa: N802


async def claim(
    conn: AsyncConnection | AsyncSession, scope: str, tenant: str, request_id: str
) -> None:
    """Hold `request_id` of `tenant` for `scope` (e.g. `policy.create`) until the
    transaction ends; call it first in the transaction, before reading earlier results."""
    await conn.execute(_CLAIM, {"key": f"{scope}\x1f{tenant}\x1f{request_id}"})


def outcomes_table(metadata: MetaData) -> Table:
    """A service's kept outcomes: one row per (tenant, request id) of a non-create call."""
    return Table(
        "outcomes",
        metadata,
        Column("tenant_id", Text, nullable=False),
        Column("request_id", Text, nullable=False),
        # The call (e.g. `job.cancel`) and SHA-256 of its request, to refuse a reused id.
        Column("scope", Text, nullable=False),
        Column("request_hash", Text, nullable=False),
        # The first call's answer, a serialized message of the scope's outcome type.
        Column("outcome", LargeBinary, nullable=False),
        Column("create_time", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("tenant_id", "request_id", name="pk_outcomes"),
        Index("ix_outcomes_create_time", "create_time"),
    )


def create_outcomes(schema: str) -> None:
    """The outcomes table, for a service's Alembic migration."""
    from alembic import op  # noqa: PLC0415 - only migrations need alembic's op proxy

    columns = [c._copy() for c in outcomes_table(MetaData()).columns]
    pk = PrimaryKeyConstraint("tenant_id", "request_id", name="pk_outcomes")
    op.create_table("outcomes", *columns, pk, schema=schema)
    op.create_index("ix_outcomes_create_time", "outcomes", ["create_time"], schema=schema)


def drop_outcomes(schema: str) -> None:
    from alembic import op  # noqa: PLC0415 - only migrations need alembic's op proxy

    op.drop_table("outcomes", schema=schema)


async def recall(
    conn: Conn, table: Table, scope: str, tenant: str, request: Asked | None, kind: type[M]
) -> M | None:
    """Claim the request's id, then return the outcome an earlier call with it kept in
    `table`, or None: the caller does the work and `keep`s its outcome in this same
    transaction. Without a request id a call is not idempotent: always None."""
    if request is None or not request.request_id:
        return None
    await claim(conn, "outcome", tenant, request.request_id)
    t = table
    row = (
        await conn.execute(
            select(t.c.scope, t.c.request_hash, t.c.outcome, t.c.create_time).where(
                t.c.tenant_id == tenant, t.c.request_id == request.request_id
            )
        )
    ).first()
    if row is None or row.create_time < datetime.now(UTC) - RETENTION:
        return None
    if row.scope != scope or row.request_hash != _digest(request):
        raise AlreadyExists(
            "request_id was already used with a different request",
            metadata={"request_id": request.request_id},
        )
    return kind.FromString(row.outcome)


async def keep(
    conn: Conn, table: Table, scope: str, tenant: str, request: Asked | None, outcome: Message
) -> None:
    """Keep `outcome` in `table` as the answer to the request's id (after `recall` found
    none, in the same transaction), and drop a few outcomes past their retention."""
    if request is None or not request.request_id:
        return
    t = table
    now = datetime.now(UTC)
    values = {
        "scope": scope,
        "request_hash": _digest(request),
        "outcome": outcome.SerializeToString(deterministic=True),
        "create_time": now,
    }
    # An expired outcome of this id is replaced; the claim keeps other calls out meanwhile.
    await conn.execute(
        insert(t)
        .values(tenant_id=tenant, request_id=request.request_id, **values)
        .on_conflict_do_update(constraint="pk_outcomes", set_=values)
    )
    expired = (
        select(t.c.tenant_id, t.c.request_id)
        .where(t.c.create_time < now - RETENTION)
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    await conn.execute(delete(t).where(tuple_(t.c.tenant_id, t.c.request_id).in_(expired)))


def _digest(request: Asked) -> str:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
