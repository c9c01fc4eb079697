"""SQL for policies, revisions and decisions; rows in, domain objects and protos out."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from accord.common.v1 import decision_pb2
from accord.policy.v1 import policy_pb2
from accord_policy import tables as t
from accord_policy.domain import permits
from accord_policy.domain.rules import TenantPolicy


@dataclass(frozen=True)
class StoredPolicy:
    policy: policy_pb2.Policy
    request_id: str


def _policy(row: Row) -> StoredPolicy:  # type: ignore[type-arg]
    p = policy_pb2.Policy(
        policy_id=row.policy_id,
        tenant_id=row.tenant_id,
        display_name=row.display_name,
        rules=policy_pb2.PolicyRules.FromString(row.rules),
        revision=row.revision,
        etag=row.etag,
    )
    p.create_time.FromDatetime(row.create_time)
    p.update_time.FromDatetime(row.update_time)
    return StoredPolicy(p, row.request_id)


async def bump_revision(session: AsyncSession, tenant: str) -> int:
    """Increase the tenant's policy-set revision; serialises concurrent policy writes."""
    stmt = (
        pg_insert(t.revisions)
        .values(tenant_id=tenant, revision=1)
        .on_conflict_do_update(
            index_elements=[t.revisions.c.tenant_id], set_={"revision": t.revisions.c.revision + 1}
        )
        .returning(t.revisions.c.revision)
    )
    return int((await session.execute(stmt)).scalar_one())


async def revision(session: AsyncSession | AsyncConnection, tenant: str) -> int:
    stmt = select(t.revisions.c.revision).where(t.revisions.c.tenant_id == tenant)
    return int((await session.execute(stmt)).scalar_one_or_none() or 0)


async def insert_policy(
    session: AsyncSession, p: policy_pb2.Policy, request_id: str, now: datetime
) -> None:
    await session.execute(
        insert(t.policies).values(
            policy_id=p.policy_id,
            tenant_id=p.tenant_id,
            request_id=request_id,
            display_name=p.display_name,
            rules=p.rules.SerializeToString(deterministic=True),
            revision=p.revision,
            etag=p.etag,
            create_time=now,
            update_time=now,
        )
    )


async def update_policy(session: AsyncSession, p: policy_pb2.Policy, now: datetime) -> None:
    await session.execute(
        update(t.policies)
        .where(t.policies.c.policy_id == p.policy_id)
        .values(
            display_name=p.display_name,
            rules=p.rules.SerializeToString(deterministic=True),
            revision=p.revision,
            etag=p.etag,
            update_time=now,
        )
    )


async def delete_policy(session: AsyncSession, policy_id: str) -> None:
    await session.execute(delete(t.policies).where(t.policies.c.policy_id == policy_id))


async def get_policy(
    session: AsyncSession, tenant: str, policy_id: str, *, lock: bool = False
) -> StoredPolicy | None:
    stmt = select(t.policies).where(
        t.policies.c.tenant_id == tenant, t.policies.c.policy_id == policy_id
    )
    row = (await session.execute(stmt.with_for_update() if lock else stmt)).one_or_none()
    return _policy(row) if row else None


async def find_by_request(
    session: AsyncSession, tenant: str, request_id: str
) -> StoredPolicy | None:
    stmt = select(t.policies).where(
        t.policies.c.tenant_id == tenant, t.policies.c.request_id == request_id
    )
    row = (await session.execute(stmt)).one_or_none()
    return _policy(row) if row else None


async def name_taken(session: AsyncSession, tenant: str, name: str, except_id: str = "") -> bool:
    stmt = select(t.policies.c.policy_id).where(
        t.policies.c.tenant_id == tenant,
        t.policies.c.display_name == name,
        t.policies.c.policy_id != except_id,
    )
    return (await session.execute(stmt)).first() is not None


async def list_policies(
    session: AsyncSession, tenant: str, after: list[str] | None, limit: int
) -> list[policy_pb2.Policy]:
    c = t.policies.c
    stmt = select(t.policies).where(c.tenant_id == tenant)
    if after is not None:
        when = datetime.fromisoformat(after[0])
        stmt = stmt.where(
            or_(c.create_time > when, and_(c.create_time == when, c.policy_id > after[1]))
        )
    stmt = stmt.order_by(c.create_time, c.policy_id).limit(limit)
    return [_policy(r).policy for r in (await session.execute(stmt)).all()]


async def retentions(
    session: AsyncSession, after: str | None, limit: int
) -> tuple[list[tuple[str, timedelta]], str | None]:
    """Of the next `limit` tenants with policies (by id, after `after`), those whose policies
    set a retention, with the shortest; and the last tenant looked at if more follow."""
    c = t.policies.c
    ids = select(c.tenant_id).distinct().order_by(c.tenant_id).limit(limit + 1)
    if after is not None:
        ids = ids.where(c.tenant_id > after)
    tenants = list((await session.execute(ids)).scalars())
    more = len(tenants) > limit
    tenants = tenants[:limit]
    shortest: dict[str, timedelta] = {}
    if tenants:
        rows = await session.execute(select(c.tenant_id, c.rules).where(c.tenant_id.in_(tenants)))
        for tenant, blob in rows.all():
            rules = policy_pb2.PolicyRules.FromString(blob)
            if rules.HasField("retention"):
                kept = rules.retention.ToTimedelta()
                shortest[tenant] = min(kept, shortest.get(tenant, kept))
    return sorted(shortest.items()), tenants[-1] if more else None


async def tenant_policies(
    session: AsyncSession | AsyncConnection, tenant: str
) -> list[TenantPolicy]:
    stmt = select(t.policies.c.policy_id, t.policies.c.rules).where(
        t.policies.c.tenant_id == tenant
    )
    return [
        TenantPolicy(r.policy_id, policy_pb2.PolicyRules.FromString(r.rules))
        for r in (await session.execute(stmt)).all()
    ]


async def insert_decisions(
    session: AsyncSession, tenant: str, decisions: list[tuple[str, decision_pb2.PolicyDecision]]
) -> None:
    """Record binding decisions, each with the job it is for, in one statement."""
    await session.execute(
        insert(t.decisions),
        [
            {
                "decision_id": d.decision_id,
                "tenant_id": tenant,
                "job_id": job_id,
                "allowed": d.outcome == decision_pb2.DECISION_OUTCOME_ALLOW,
                "revision": d.policy_revision,
                "decision": d.SerializeToString(),
                "decide_time": d.decide_time.ToDatetime(tzinfo=UTC),
            }
            for job_id, d in decisions
        ],
    )


async def take_permit(
    conn: AsyncConnection, tenant: str, host: str, limits: permits.Limits, lease: float
) -> tuple[permits.Taken, str, datetime]:
    """Take one request from the host's shared bucket and cap, under a row lock.

    Every policy process goes through the same locked row, so the bucket and the count of
    held permits are exact across processes. Three statements: lock (creating the row full
    if new), count the live permits (dropping lapsed ones), write back. Returns (what the
    bucket said, the permit id when a slot is held, the time the permit lapses).
    """
    h = t.hosts.c
    new = pg_insert(t.hosts).values(
        tenant_id=tenant, host=host, tokens=permits.capacity(limits), refill_time=func.now()
    )
    # DO UPDATE (to the same value) locks an existing row and returns it, in one statement.
    lock = new.on_conflict_do_update(
        index_elements=[h.tenant_id, h.host], set_={"tokens": h.tokens}
    ).returning(h.tokens, h.refill_time, func.clock_timestamp().label("now"))
    row = (await conn.execute(lock)).one()
    now: datetime = row.now
    held = 0
    if limits.concurrency > 0:
        p = t.permits.c
        mine = and_(p.tenant_id == tenant, p.host == host)
        lapsed = delete(t.permits).where(mine, p.expire_time <= now).cte("lapsed")
        live = select(func.count()).select_from(t.permits).where(mine, p.expire_time > now)
        held = int((await conn.execute(live.add_cte(lapsed))).scalar_one())
    taken = permits.take(limits, row.tokens, (now - row.refill_time).total_seconds(), held)
    write = (
        update(t.hosts)
        .where(h.tenant_id == tenant, h.host == host)
        .values(tokens=taken.tokens, refill_time=now)
    )
    expire = now + timedelta(seconds=lease)
    permit_id = ""
    if taken.granted and limits.concurrency > 0:
        permit_id = str(uuid.uuid4())
        slot = insert(t.permits).values(
            permit_id=permit_id, tenant_id=tenant, host=host, expire_time=expire
        )
        await conn.execute(slot.add_cte(write.cte("written")))
    else:
        await conn.execute(write)
    return taken, permit_id, expire


async def release_permit(conn: AsyncConnection, tenant: str, permit_id: str) -> None:
    await conn.execute(
        delete(t.permits).where(t.permits.c.permit_id == permit_id, t.permits.c.tenant_id == tenant)
    )


@dataclass(frozen=True)
class StoredRobots:
    status: int  # HTTP status of the last fetch; 0 when the origin was unreachable
    body: str
    expire_time: datetime


async def get_robots(session: AsyncSession, origin: str) -> StoredRobots | None:
    r = t.robots.c
    row = (
        await session.execute(
            select(r.status, r.body, r.expire_time).where(
                r.origin == origin, r.expire_time > func.now()
            )
        )
    ).one_or_none()
    return StoredRobots(row.status, row.body, row.expire_time) if row else None


async def put_robots(
    session: AsyncSession, origin: str, status: int, body: str, ttl: float
) -> None:
    values = {
        "status": status,
        "body": body,
        "fetch_time": func.now(),
        "expire_time": func.now() + timedelta(seconds=ttl),
    }
    await session.execute(
        pg_insert(t.robots)
        .values(origin=origin, **values)
        .on_conflict_do_update(index_elements=[t.robots.c.origin], set_=values)
    )
