"""Migration 0002 links the records already in the log into their tenants' logs and trees."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from alembic import command
from alembic.config import Config

from accord_audit.app import MIGRATIONS
from accord_audit.domain import chain
from accord_audit.domain.records import Event
from accord_audit.logs import TenantLogs
from accord_audit.signer import Signer
from accord_kit import db
from services.audit.tests.rfc9162 import mth, verify_inclusion


def upgrade(url: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = db.asyncpg_url(url)
    config.attributes["schema"] = "audit"
    command.upgrade(config, revision)


def event(n: int, tenant: str) -> Event:
    when = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return Event(f"e{n}", "accord.t.v1.job.queued", tenant, "job", f"job-{n}", when, b"\x08")


async def test_records_of_the_first_schema_get_tenant_logs_that_verify(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0001")
    tenants = ["acme", "other", "acme", "acme", "other", "acme"]
    records = chain.extend(
        -1, chain.GENESIS, [event(n, t) for n, t in enumerate(tenants)], datetime.now(UTC)
    )
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
    try:
        await conn.copy_records_to_table(
            "records",
            schema_name="audit",
            records=[
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
                )
                for r in records
            ],
        )
    finally:
        await conn.close()
    await asyncio.to_thread(upgrade, database_url, "head")

    engine = db.create_engine(database_url)
    reads = await db.read_pool(database_url)
    try:
        logs = TenantLogs(db.sessionmaker(engine), reads, Signer(None), "accord.audit")
        check = await logs.verify("acme", 0, 0)
        assert (check.first_invalid, check.checked) == (None, 4)
        assert (await logs.verify("other", 0, 0)).checked == 2
        conn = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        try:
            hashes = [
                r["tenant_hash"]
                for r in await conn.fetch(
                    "SELECT tenant_hash FROM audit.records WHERE tenant_id = 'acme' "
                    "ORDER BY tenant_index"
                )
            ]
        finally:
            await conn.close()
        cp = await logs.sign("acme")
        assert (cp.tree_size, cp.root_hash) == (4, mth(hashes))
        proof = await logs.inclusion("acme", 2, 4)
        assert verify_inclusion(hashes[2], 2, 4, proof.hashes, cp.root_hash)
    finally:
        await reads.close()
        await engine.dispose()
