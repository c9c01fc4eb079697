"""The consumer against real JetStream and Postgres: several streams, replicas, outages."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from accord.audit.v1 import audit_service_pb2 as pb
from accord_audit.app import App, migrate
from accord_audit.testing import Harness, eventually, settings_for
from accord_kit import events
from accord_kit.testing import as_tenant, channel


@contextlib.asynccontextmanager
async def running(app: App, nc: Client) -> AsyncIterator[Harness]:
    await app.start()
    try:
        async with channel(app.port) as ch:
            yield Harness.over(app, ch, nc, app.settings.producers[0], app.settings.database_url)
    finally:
        await app.stop()


@pytest.fixture
async def bare_nc(nats_url: str) -> AsyncIterator[Client]:
    """A NATS client that creates no stream; streams a test names are deleted after it."""
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def test_every_configured_stream_is_created_and_consumed(
    database_url: str, nats_url: str, bare_nc: Client
) -> None:
    producers = [f"t{uuid.uuid4().hex[:12]}" for _ in range(2)]
    settings = settings_for(database_url, nats_url, producers[0], f"a-{uuid.uuid4().hex[:8]}")
    settings.producers = producers
    await asyncio.to_thread(migrate, settings)
    js = bare_nc.jetstream()
    try:
        async with running(App(settings), bare_nc) as audit:

            async def streams_exist() -> bool | None:
                try:
                    for p in producers:
                        await js.stream_info(events.stream_name(p))
                except NotFoundError:
                    return None
                return True

            await eventually(streams_exist, what="the service to create its streams")
            first = audit.event()
            audit.producer = producers[1]
            second = audit.event()
            await audit.publish(first, second)
            records = await audit.wait_for(first, second)
            assert {r.event_id for r in records} == {first.event_id, second.event_id}
    finally:
        for p in producers:
            with contextlib.suppress(Exception):
                await js.delete_stream(events.stream_name(p))


async def test_replicas_share_the_durable_and_never_fork_the_chain(
    database_url: str, nats_url: str, producer: str, nc: Client
) -> None:
    durable = f"a-{uuid.uuid4().hex[:8]}"
    settings = [settings_for(database_url, nats_url, producer, durable) for _ in range(2)]
    for s in settings:
        s.batch_size = 3  # small batches interleave the replicas' appends
    await asyncio.to_thread(migrate, settings[0])
    async with running(App(settings[0]), nc) as one, running(App(settings[1]), nc):
        sent = [one.event(tenant="acme" if i % 2 else "other") for i in range(40)]
        await one.publish(*sent)
        acme = await one.wait_for(*[e for e in sent if e.tenant_id == "acme"])
        other = await one.wait_for(*[e for e in sent if e.tenant_id == "other"], tenant="other")
        indexes = sorted(r.index for r in [*acme, *other])
        assert indexes == list(range(40))
        verified = await one.stub.VerifyRange(pb.VerifyRangeRequest())
        assert (verified.valid, verified.checked_count) == (True, 40)


async def test_a_trickle_is_gathered_into_one_append_while_the_consumer_lingers(
    database_url: str, nats_url: str, producer: str, nc: Client
) -> None:
    """Events that come one at a time while the consumer lingers after a short pull go in
    one transaction (records of one append share its time), not one each."""
    settings = settings_for(database_url, nats_url, producer, f"a-{uuid.uuid4().hex[:8]}")
    settings.linger = 2.0
    await asyncio.to_thread(migrate, settings)
    async with running(App(settings), nc) as audit:
        first = audit.event()
        await audit.publish(first)
        [alone] = await audit.wait_for(first)  # a pull of one: the consumer lingers now
        trickle = [audit.event() for _ in range(4)]
        for event in trickle:
            await audit.publish(event)
            await asyncio.sleep(0.05)
        records = [r for r in await audit.wait_for(*trickle) if r.event_id != first.event_id]
        assert [r.event_id for r in records] == [e.event_id for e in trickle]
        assert len({r.append_time.ToDatetime() for r in records}) == 1
        assert records[0].append_time != alone.append_time


async def test_the_consumer_waits_out_a_postgres_outage(audit: Harness, postgres_url: str) -> None:
    name = audit.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    ch = channel(audit.app.port)
    health = health_pb2_grpc.HealthStub(ch)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        event = audit.event()
        await audit.publish(event)

        async def not_serving() -> bool | None:
            response = await health.Check(health_pb2.HealthCheckRequest())
            return True if response.status == health_pb2.HealthCheckResponse.NOT_SERVING else None

        await eventually(not_serving, what="health to notice Postgres is down")
        info = await audit.nc.jetstream().consumer_info(
            events.stream_name(audit.producer), audit.app.settings.durable_name
        )
        assert info.num_ack_pending + info.num_pending == 1  # held, not acked, while down
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await ch.close(None)
    records = await audit.wait_for(event)
    assert [r.event_id for r in records] == [event.event_id]


async def test_stop_ends_followers_unavailable_with_where_to_resume(
    database_url: str, nats_url: str, producer: str, nc: Client
) -> None:
    settings = settings_for(database_url, nats_url, producer, f"a-{uuid.uuid4().hex[:8]}")
    settings.drain_seconds = 30  # longer than the waits below: only closing ends the stream
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    stopping: asyncio.Task[None] | None = None
    try:
        async with channel(app.port) as ch:
            audit = Harness.over(app, ch, nc, producer, "")
            event = audit.event()
            await audit.publish(event)
            call = audit.stub.StreamRecords(pb.StreamRecordsRequest(), metadata=as_tenant("acme"))
            received = aiter(call)
            first = await asyncio.wait_for(anext(received), 15)
            assert first.record.event_id == event.event_id
            stopping = asyncio.create_task(app.stop())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await asyncio.wait_for(anext(received), 10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "resume from index 1" in (err.value.details() or "")
            await asyncio.wait_for(stopping, 10)
    finally:
        await (stopping or app.stop())
