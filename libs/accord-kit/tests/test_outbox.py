"""The outbox relay against real PostgreSQL and JetStream: the relays of two replicas (each
with its own database pool and NATS connection) share one outbox, and the stream still gets
its events in the order they were written, even when one relay is slow to publish the window
it took (a replica busy serving calls)."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from accord.events.v1 import envelope_pb2, job_events_pb2
from accord_kit import db, events, outbox
from accord_kit import nats as knats
from accord_kit.backing import Backing
from accord_kit.nats import Connection
from accord_kit.testing import eventually

EVENTS = 100
WINDOW = 10  # small windows: many turns for the two relays to interleave


def event(producer: str) -> envelope_pb2.EventEnvelope:
    job_id = str(uuid.uuid4())
    return events.envelope(
        producer=producer,
        aggregate="job",
        event="changed",
        aggregate_id=job_id,
        tenant_id="acme",
        payload=job_events_pb2.JobStateChanged(job_id=job_id),
    )


class Slow:
    """A real NATS connection whose JetStream publishes each wait `delay` first."""

    def __init__(self, nc: Connection, delay: float) -> None:
        self._nc, self._delay = nc, delay

    def __getattr__(self, name: str) -> object:
        return getattr(self._nc, name)

    def jetstream(self) -> object:
        js, delay = self._nc.jetstream(), self._delay

        class Delayed:
            async def publish(self, *args: object, **kwargs: object) -> object:
                await asyncio.sleep(delay)
                return await js.publish(*args, **kwargs)  # type: ignore[arg-type]

        return Delayed()


async def test_two_relays_on_one_outbox_publish_in_the_order_rows_were_written(
    database_url: str, nats_url: str
) -> None:
    producer = f"ob{uuid.uuid4().hex[:10]}"
    replicas = [await Backing.open(database_url, nats_url, "outbox-test") for _ in range(2)]
    backing = replicas[0]
    stream = events.stream_name(producer)
    await knats.ensure_stream(backing.nc, stream, events.stream_subjects(producer))
    table = outbox.outbox_table(db.metadata(producer))
    slow = Slow(replicas[0].nc, 0.3)
    relays = [
        outbox.Relay(replicas[0].engine, table, slow, window=WINDOW),  # type: ignore[arg-type]
        outbox.Relay(replicas[1].engine, table, replicas[1].nc, window=WINDOW),
    ]
    js = backing.nc.jetstream()
    try:
        async with backing.engine.begin() as conn:
            await conn.exec_driver_sql(f"CREATE SCHEMA {producer}")
            await conn.run_sync(table.metadata.create_all)
        written = [event(producer) for _ in range(EVENTS)]
        async with backing.engine.begin() as conn:
            await outbox.enqueue(conn, table, *written)
        relays[0].start()  # takes the first window, then is slow to publish it
        await asyncio.sleep(0.2)
        relays[1].start()

        async def drained() -> bool | None:
            async with backing.engine.connect() as conn:
                left = await conn.scalar(select(func.count()).select_from(table))
            return True if left == 0 else None

        await eventually(drained, 30, what="both relays to publish the outbox")
        stored = [await js.get_msg(stream, seq) for seq in range(1, EVENTS + 1)]
        order = [m.headers["Nats-Msg-Id"] if m.headers else "" for m in stored]
        assert order == [e.event_id for e in written]
    finally:
        await asyncio.gather(*(relay.stop() for relay in relays))
        async with backing.engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {producer} CASCADE")
        await js.delete_stream(stream)
        for replica in replicas:
            await replica.close()
