"""The verifiable audit log: append rate, VerifyRange over a large tenant log, proof latency.

    uv run python bench/audit_log.py [--records 1000000] [--stream-events 20000]
                                     [--batch-sizes 100,1000] [--proofs 300]

Starts an embedded PostgreSQL and nats-server on free loopback ports and, in this process, an
audit service (accord_audit.app.App), then measures:

1. Append rate from JetStream: `--stream-events` events (8 tenants, round robin) are published
   to a stream first; then an audit service is started on it and timed from its start until
   every event is a committed, chained, tree-updated row. Once per consumer batch size.
2. The append use case alone (no NATS): `--records` events of one tenant appended in batches
   of 1000 through the same code the consumer calls, to build a large log; then VACUUM
   ANALYZE of the audit tables, as autovacuum would long have done to a log grown over time.
3. VerifyRange (v2) over that whole tenant log through gRPC, twice (the second with the
   tables in the page cache), and the v1 VerifyRange of the log of all tenants beside it;
   with the CPU time of this process (the service runs in it) and of PostgreSQL beside the
   wall time, since a loaded machine stretches the latter.
4. Inclusion and consistency proof latency at that size through gRPC (`--proofs` each, random
   indexes and sizes, one call at a time): p50, p99, max; beside them the floors of a read
   in this process: `SELECT 1` in a pooled session, and on a plain pooled connection (one
   round trip, as a proof reads).

Targets (DESIGN.md and the product brief): proofs under 10 ms, VerifyRange of 1,000,000 records
under 10 s, appends keeping up with the suite's end-to-end job rate times events per job.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
import nats
from _common import phase
from _cpu import _postgres_seconds
from sqlalchemy import func, select

from accord.audit.v1 import audit_service_pb2 as pb1
from accord.audit.v1 import audit_service_pb2_grpc as grpc1
from accord.audit.v2 import audit_service_pb2 as pb
from accord.audit.v2 import audit_service_pb2_grpc
from accord.events.v1 import job_events_pb2
from accord_audit import tables
from accord_audit.app import App, migrate
from accord_audit.config import Settings
from accord_audit.domain.records import parse_event
from accord_kit import db, events, logs, tokens
from accord_kit import nats as knats
from accord_kit.auth import TENANT_METADATA, bearer
from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port

BIG = "big"


def envelope(producer: str, tenant: str, n: int) -> bytes:
    job_id = str(uuid.uuid4())
    return events.envelope(
        producer=producer,
        aggregate="job",
        event="succeeded",
        aggregate_id=job_id,
        tenant_id=tenant,
        payload=job_events_pb2.JobStateChanged(job_id=job_id),
        event_time=datetime(2030, 1, 1, tzinfo=UTC) + timedelta(microseconds=n),
    ).SerializeToString()


def settings(pg_url: str, nats_url: str, producer: str, batch: int) -> Settings:
    return Settings(
        database_url=pg_url,
        nats_url=nats_url,
        port=0,
        metrics_port=0,
        producers=[producer],
        durable_name=f"bench-{producer}",
        batch_size=batch,
        fetch_timeout=0.2,
    )


async def appended(app: App, tenants: list[str]) -> int:
    async with db.sessionmaker(app._backing.engine)() as s:
        stmt = select(func.coalesce(func.sum(tables.logs.c.size), 0)).where(
            tables.logs.c.tenant_id.in_(tenants)
        )
        return int((await s.execute(stmt)).scalar_one())


async def stream_rate(pg_url: str, nats_url: str, count: int, batch: int) -> tuple[float, float]:
    """(publish seconds, events/s from the consumer's start to the last committed row)."""
    producer = f"b{batch}x{uuid.uuid4().hex[:6]}"
    tenants = [f"{producer}-{i}" for i in range(8)]
    nc = await nats.connect(nats_url)
    await knats.ensure_stream(nc, events.stream_name(producer), events.stream_subjects(producer))
    js = nc.jetstream()
    start = time.perf_counter()
    subject = events.subject(producer, "job", "succeeded")
    for chunk in range(0, count, 500):
        acks = [
            js.publish(subject, envelope(producer, tenants[n % 8], n))
            for n in range(chunk, min(count, chunk + 500))
        ]
        await asyncio.gather(*acks)
    published = time.perf_counter() - start
    app = App(settings(pg_url, nats_url, producer, batch))
    start = time.perf_counter()
    await app.start()
    try:
        while await appended(app, tenants) < count:  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - start
    finally:
        await app.stop()
        await nc.close()
    return published, count / elapsed


async def fill(app: App, records: int) -> float:
    """Append `records` events of tenant BIG in batches of 1000; events/s."""
    cases = app._cases
    start = time.perf_counter()
    for chunk in range(0, records, 1000):
        batch = [
            parse_event(envelope("bench", BIG, n)) for n in range(chunk, min(records, chunk + 1000))
        ]
        await cases.append(batch)
        if (chunk + 1000) % 100_000 == 0:
            phase(
                f"{chunk + 1000} records ({(chunk + 1000) / (time.perf_counter() - start):.0f}/s)"
            )
    return records / (time.perf_counter() - start)


def quantiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"


async def proofs(
    stub: audit_service_pb2_grpc.AuditServiceStub, size: int, n: int, md: object
) -> tuple[str, str]:
    rng = random.Random(1)  # noqa: S311 - picks indexes, not secrets
    inclusion, consistency = [], []
    for _ in range(n):
        request = pb.GetInclusionProofRequest(index=rng.randrange(size), tree_size=size)
        start = time.perf_counter()
        await stub.GetInclusionProof(request, metadata=md)
        inclusion.append(time.perf_counter() - start)
    for _ in range(n):
        c = pb.GetConsistencyProofRequest(from_size=rng.randrange(1, size), to_size=size)
        start = time.perf_counter()
        await stub.GetConsistencyProof(c, metadata=md)
        consistency.append(time.perf_counter() - start)
    return quantiles(inclusion), quantiles(consistency)


async def round_trip(app: App, n: int) -> str:
    """What any read in a session costs before it does anything: a pooled session (its
    pre-ping, BEGIN and ROLLBACK) and one query."""
    sessions = db.sessionmaker(app._backing.engine)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        async with sessions() as s:
            await s.execute(select(1))
        samples.append(time.perf_counter() - start)
    return quantiles(samples)


async def one_round_trip(pg_url: str, n: int) -> str:
    """The floor of a proof's read: `SELECT 1` on a plain pooled connection (db.read_pool,
    what proofs use), one round trip."""
    pool = await db.read_pool(pg_url)
    samples = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            samples.append(time.perf_counter() - start)
    finally:
        await pool.close()
    return quantiles(samples)


@contextlib.asynccontextmanager
async def backing(workdir: Path) -> AsyncIterator[tuple[str, str]]:
    os.environ.update(tokens.provision(workdir / "auth", tokens.generate_key()))
    with EmbeddedPostgres(workdir / "pg", free_port()) as pg:
        server = EmbeddedNats(workdir / "nats", free_port())
        await asyncio.to_thread(server.start)
        try:
            yield pg.url, server.url
        finally:
            await asyncio.to_thread(server.stop)


async def vacuum(pg_url: str) -> None:
    """What autovacuum has long done to a log this size that grew over time; right after a
    bulk fill it would run during the checks and be counted in them."""
    phase("VACUUM ANALYZE of the audit tables")
    conn = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    try:
        await conn.execute("VACUUM (ANALYZE) audit.records, audit.tree_nodes")
    finally:
        await conn.close()


def postgres_seconds(workdir: Path) -> float:
    """CPU seconds of the embedded PostgreSQL so far (postmaster and backends)."""
    return _postgres_seconds(workdir / "pg") or 0.0


def service_metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    key = tokens.read_private_key(Path(os.environ["ACCORD_AUTH_SIGNING_KEY_FILE"]))
    token = tokens.issue(
        key, subject="bench:operator", tenant="*", scopes=["audit:read"], ttl=timedelta(hours=4)
    )
    return (*bearer(token), (TENANT_METADATA, tenant))


async def run(args: argparse.Namespace, workdir: Path) -> None:
    rows: list[tuple[str, str, str]] = []
    async with backing(workdir) as (pg_url, nats_url):
        await asyncio.to_thread(migrate, settings(pg_url, nats_url, "bench", 100))
        for batch in args.batch_sizes:
            phase(f"JetStream -> log, {args.stream_events} events, consumer batch {batch}")
            published, rate = await stream_rate(pg_url, nats_url, args.stream_events, batch)
            rows.append(
                (
                    f"append from JetStream, batch {batch}",
                    f"{rate:,.0f} events/s",
                    f"(publishing them took {published:.1f} s)",
                )
            )
        app = App(settings(pg_url, nats_url, "bench", 100))
        await app.start()
        try:
            phase(f"appending {args.records} records of one tenant")
            cpu = time.process_time()
            rate = await fill(app, args.records)
            cpu = (time.process_time() - cpu) / args.records * 1e6
            rows.append(
                (
                    "append use case alone, 1000/tx",
                    f"{rate:,.0f} events/s",
                    f"({cpu:.0f} us CPU per event here, building events included)",
                )
            )
            await vacuum(pg_url)
            md = service_metadata(BIG)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
                stub = audit_service_pb2_grpc.AuditServiceStub(ch)
                phase("VerifyRange (v2, the tenant's log)")
                for run in (1, 2):
                    pg_cpu = postgres_seconds(workdir)
                    start, cpu = time.perf_counter(), time.process_time()
                    check = await stub.VerifyRange(
                        pb.VerifyRangeRequest(), metadata=md, timeout=900
                    )
                    took, cpu = time.perf_counter() - start, time.process_time() - cpu
                    pg_cpu = postgres_seconds(workdir) - pg_cpu
                    rows.append(
                        (
                            f"VerifyRange v2, {check.checked_count:,} records, run {run}",
                            f"{took:.1f} s (valid={check.valid}), CPU {cpu:.1f} s here,"
                            f" {pg_cpu:.1f} s PostgreSQL",
                            "target < 10 s",
                        )
                    )
                phase("VerifyRange (v1, the log of all tenants)")
                v1 = grpc1.AuditServiceStub(ch)
                start, cpu = time.perf_counter(), time.process_time()
                whole = await v1.VerifyRange(pb1.VerifyRangeRequest(), metadata=md, timeout=900)
                took, cpu = time.perf_counter() - start, time.process_time() - cpu
                rows.append(
                    (
                        f"VerifyRange v1, {whole.checked_count:,} records",
                        f"{took:.1f} s (valid={whole.valid}), {cpu:.1f} s CPU here",
                        "(the operator's check)",
                    )
                )
                phase("checkpoint and proofs")
                start = time.perf_counter()
                await stub.GetCheckpoint(pb.GetCheckpointRequest(), metadata=md)
                rows.append(
                    (
                        "GetCheckpoint (signs a new one)",
                        f"{(time.perf_counter() - start) * 1000:.1f} ms",
                        "",
                    )
                )
                floor = await round_trip(app, args.proofs)
                rows.append(("floor: SELECT 1 in a pooled session", floor, "(no gRPC)"))
                floor = await one_round_trip(pg_url, args.proofs)
                rows.append(("floor: SELECT 1, plain pooled connection", floor, "(no gRPC)"))
                inclusion, consistency = await proofs(stub, args.records, args.proofs, md)
                rows.append((f"inclusion proof at {args.records:,}", inclusion, "target < 10 ms"))
                rows.append(
                    (f"consistency proof at {args.records:,}", consistency, "target < 10 ms")
                )
        finally:
            await app.stop()
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    width = max(len(r[0]) for r in rows)
    for name, got, beside in rows:
        print(f"{name:<{width}}  {got:<48} {beside}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--stream-events", type=int, default=20_000)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000]
    )
    parser.add_argument("--proofs", type=int, default=300)
    parser.add_argument("--log-level", default="error")
    args = parser.parse_args()
    logs.configure(args.log_level, "console")
    with tempfile.TemporaryDirectory(prefix="accord-audit-bench-") as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
