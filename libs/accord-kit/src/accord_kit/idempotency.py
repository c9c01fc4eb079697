"""`request_id` idempotency, atomic: one transaction at a time per tenant and request id.

A mutating call with a request id first claims it for its transaction, then looks for an
earlier call's result, and only then writes. The claim is a transaction-scoped PostgreSQL
advisory lock on the (scope, tenant, request id) key, so concurrent calls with the same id
run that look-then-write one after another: the second sees what the first committed and
returns it, instead of racing it to a unique constraint (which ended as INTERNAL). The lock
is released when the transaction ends, committed or not. Keys that happen to share a hash
only wait for each other; nothing else is affected.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

_CLAIM = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def claim(
    conn: AsyncConnection | AsyncSession, scope: str, tenant: str, request_id: str
) -> None:
    """Hold `request_id` of `tenant` for `scope` (e.g. `policy.create`) until the
    transaction ends; call it first in the transaction, before reading earlier results."""
    await conn.execute(_CLAIM, {"key": f"{scope}\x1f{tenant}\x1f{request_id}"})
