"""How long the NATS users of a service take to recover after NATS pauses or restarts.

    uv run python bench/nats_outage.py [--scenario pause|restart|both] [--outage 15]

Starts an embedded PostgreSQL and nats-server on free loopback ports, and in this process an
audit service (its consumer on stream ACCORD_BENCH) and a producer built from the kit pieces
every stateful service uses (Backing, Server with the NATS health check and the revocation
follower, the outbox Relay). Then it takes NATS away for `--outage` seconds: `pause` stops the
process (SIGSTOP, then SIGCONT: the TCP connections stay open and silent), `restart` stops it
and starts it again on the same port and store. One outbox row is written during the outage.

Printed, in seconds: when each health check turned NOT_SERVING after the outage began, and,
counted from the moment NATS is back, when it was SERVING again, when the outbox row reached
the stream and when the relay had its ack (the row deleted), when a revocation written then
reached each follower, and when an event published then was in the audit log. A figure
never reached shows as `>deadline`.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import grpc
import nats
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js.errors import NotFoundError
from sqlalchemy import Table, func, select

from accord.events.v1 import envelope_pb2, job_events_pb2
from accord_audit import store as audit_store
from accord_audit.app import App as AuditApp
from accord_audit.app import migrate as audit_migrate
from accord_audit.config import Settings as AuditSettings
from accord_kit import db, events, logs, outbox, revocations, tokens
from accord_kit import nats as knats
from accord_kit.backing import Backing
from accord_kit.config import ServiceSettings
from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port
from accord_kit.server import Server
from accord_kit.testing import nats_outage

PRODUCER = "bench"
SERVING = health_pb2.HealthCheckResponse.SERVING
POLL = 0.05


@dataclass
class Producer:
    """A stateful service reduced to its NATS users: health, revocations, the outbox relay."""

    backing: Backing
    server: Server
    relay: outbox.Relay
    table: Table

    @classmethod
    async def start(cls, database_url: str, nats_url: str) -> Producer:
        backing = await Backing.open(database_url, nats_url, "bench-producer")
        await knats.ensure_stream(
            backing.nc, events.stream_name(PRODUCER), events.stream_subjects(PRODUCER)
        )
        table = outbox.outbox_table(db.metadata("bench_producer"))
        async with backing.engine.begin() as conn:
            await conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS bench_producer")
            await conn.run_sync(table.metadata.create_all)
        server = Server(ServiceSettings(port=0, metrics_port=0))
        await backing.serve_with(server)
        relay = outbox.Relay(backing.engine, table, backing.nc)
        relay.start()
        await server.start()
        return cls(backing, server, relay, table)

    async def stop(self) -> None:
        await self.server.stop()
        await self.relay.stop()
        await self.backing.close()


@dataclass
class Figures:
    not_serving: dict[str, float] = field(default_factory=dict)
    recovered: dict[str, float] = field(default_factory=dict)


def probe_event() -> envelope_pb2.EventEnvelope:
    job_id = str(uuid.uuid4())
    return events.envelope(
        producer=PRODUCER,
        aggregate="probe",
        event=f"e{uuid.uuid4().hex[:12]}",  # its own subject, so the stream can be asked for it
        aggregate_id=job_id,
        tenant_id="bench",
        payload=job_events_pb2.JobStateChanged(job_id=job_id),
    )


async def healthy(stub: health_pb2_grpc.HealthStub) -> bool:
    try:
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == SERVING)


@contextlib.asynccontextmanager
async def stack(workdir: Path) -> AsyncIterator[tuple[EmbeddedNats, AuditApp, Producer]]:
    os.environ.update(tokens.provision(workdir / "auth", tokens.generate_key()))
    with EmbeddedPostgres(workdir / "pg", free_port()) as pg:
        server = EmbeddedNats(workdir / "nats", free_port())
        await asyncio.to_thread(server.start)
        settings = AuditSettings(
            database_url=pg.url,
            nats_url=server.url,
            port=0,
            metrics_port=0,
            producers=[PRODUCER],
            durable_name="bench-audit",
        )
        await asyncio.to_thread(audit_migrate, settings)
        audit = AuditApp(settings)
        await audit.start()
        producer = await Producer.start(pg.url, server.url)
        try:
            yield server, audit, producer
        finally:
            await producer.stop()
            await audit.stop()
            await asyncio.to_thread(server.stop)


async def measure(
    scenario: Literal["pause", "restart"],
    outage: float,
    deadline: float,
    server: EmbeddedNats,
    audit: AuditApp,
    p: Producer,
) -> Figures:
    figures = Figures()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{audit.port}") as audit_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{p.server.port}") as producer_ch,
    ):
        health = {
            "audit health": health_pb2_grpc.HealthStub(audit_ch),
            "producer health": health_pb2_grpc.HealthStub(producer_ch),
        }
        for stub in health.values():
            await until(functools.partial(healthy, stub), 30)

        during = probe_event()
        async with nats_outage(server, scenario):
            began = time.monotonic()
            async with p.backing.engine.begin() as conn:
                await outbox.enqueue(conn, p.table, during)
            while (left := began + outage - time.monotonic()) > 0:
                for name, stub in health.items():
                    if name not in figures.not_serving and not await healthy(stub):
                        figures.not_serving[name] = time.monotonic() - began
                await asyncio.sleep(min(POLL, left))
        back = time.monotonic()

        observer = await nats.connect(server.url)
        try:
            js = observer.jetstream()
            token_id = f"bench-{uuid.uuid4().hex}"
            after = probe_event()

            async def write_after() -> bool:
                with contextlib.suppress(Exception):
                    await revocations.revoke(
                        observer, token_id, reason="bench", revoked_by="bench", expires_at=None
                    )
                    await js.publish(after.event_type, after.SerializeToString())
                    return True
                return False

            await until(write_after, deadline)

            async def in_stream() -> bool:
                try:
                    await js.get_last_msg(events.stream_name(PRODUCER), during.event_type)
                except NotFoundError:
                    return False
                return True

            async def relay_done() -> bool:
                async with p.backing.engine.connect() as conn:
                    return await conn.scalar(select(func.count()).select_from(p.table)) == 0

            async def in_log(event_id: str) -> bool:
                async with db.sessionmaker(audit._backing.engine)() as s:
                    return bool(await audit_store.existing_event_ids(s, [event_id]))

            async def revoked(srv: Server) -> bool:
                return token_id in srv.auth.revocations

            checks: dict[str, Callable[[], Awaitable[bool]]] = {
                **{name: functools.partial(healthy, stub) for name, stub in health.items()},
                "outbox row in stream": in_stream,
                "relay got its ack": relay_done,
                "producer follows revocation": functools.partial(revoked, p.server),
                "audit follows revocation": functools.partial(revoked, audit.server),
                "audit appended new event": functools.partial(in_log, after.event_id),
                "audit appended outbox row": functools.partial(in_log, during.event_id),
            }
            await asyncio.gather(
                *(record(figures, name, check, back, deadline) for name, check in checks.items())
            )
        finally:
            await observer.close()
    return figures


async def until(check: Callable[[], Awaitable[bool]], deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await check():
            return True
        await asyncio.sleep(POLL)
    return False


async def record(
    figures: Figures,
    name: str,
    check: Callable[[], Awaitable[bool]],
    since: float,
    deadline: float,
) -> None:
    if await until(check, deadline):
        figures.recovered[name] = time.monotonic() - since


def report(scenario: str, outage: float, deadline: float, figures: Figures) -> None:
    print(f"\n{scenario} for {outage:g}s")
    print(f"{'':<30} {'NOT_SERVING after outage began':>32}")
    for name in ("audit health", "producer health"):
        seen = figures.not_serving.get(name)
        print(f"{name:<30} {f'{seen:.1f}s' if seen is not None else 'never':>32}")
    print(f"{'':<30} {'recovered, s after NATS back':>32}")
    for name in (
        "audit health",
        "producer health",
        "outbox row in stream",
        "relay got its ack",
        "producer follows revocation",
        "audit follows revocation",
        "audit appended new event",
        "audit appended outbox row",
    ):
        got = figures.recovered.get(name)
        print(f"{name:<30} {f'{got:.1f}' if got is not None else f'>{deadline:g}':>32}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["pause", "restart", "both"], default="both")
    parser.add_argument("--outage", type=float, default=15.0)
    parser.add_argument("--deadline", type=float, default=420.0)
    parser.add_argument("--log-level", default="error")
    args = parser.parse_args()
    logs.configure(args.log_level, "console")
    scenarios: list[Literal["pause", "restart"]] = (
        ["pause", "restart"] if args.scenario == "both" else [args.scenario]
    )
    for scenario in scenarios:
        with tempfile.TemporaryDirectory(prefix="accord-outage-") as tmp:
            async with stack(Path(tmp)) as (server, audit, producer):
                figures = await measure(
                    scenario, args.outage, args.deadline, server, audit, producer
                )
            report(scenario, args.outage, args.deadline, figures)


if __name__ == "__main__":
    asyncio.run(main())
