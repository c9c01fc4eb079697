"""The transactional outbox: events written with the change, published after commit.

`enqueue` adds envelopes in the caller's transaction and nudges the relay with NOTIFY.
The relay publishes rows in id order, a window at a time, to JetStream with
`Nats-Msg-Id` = event id (so a crash between publish and delete cannot duplicate), and
deletes them once acknowledged. The relays of a service's replicas share its outbox and
take turns (a transaction-scoped advisory lock per outbox): were two to publish windows at
once, a later change of a job could reach the stream before an earlier one. While NATS is
down rows simply wait, and they go out as soon as the connection is re-established.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from accord.events.v1 import envelope_pb2
from accord_kit import metrics
from accord_kit.backoff import Backoff
from accord_kit.nats import Connection, Reconnected

log = structlog.get_logger("accord.outbox")

PUBLISHED = Counter("accord_outbox_published_total", "Events published from the outbox")
BACKLOG = Gauge("accord_outbox_backlog", "Outbox rows seen waiting in the last relay pass")
# Longest wait for the relay's loops to end on stop.
STOP_SECONDS = 5.0


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Text, nullable=False, unique=True),
        Column("subject", Text, nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


# One relay of a service at a time, until its window is published and deleted.
_TURN = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


def _channel(table: Table) -> str:
    return f"{table.schema}_outbox"


async def enqueue(
    session: AsyncSession | AsyncConnection, table: Table, *events: envelope_pb2.EventEnvelope
) -> None:
    """Write events in the caller's transaction; they are published only if it commits."""
    if not events:
        return
    rows = [
        {"event_id": e.event_id, "subject": e.event_type, "envelope": e.SerializeToString()}
        for e in events
    ]
    await session.execute(insert(table), rows)
    await session.execute(text("SELECT pg_notify(:c, '')"), {"c": _channel(table)})


class Relay:
    """Publishes one service's outbox to JetStream until stopped."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        nc: Connection,
        *,
        window: int = 256,
        idle_poll: float = 1.0,
    ) -> None:
        self._engine = engine
        self._table = table
        self._nc = nc
        self._window = window
        self._idle_poll = idle_poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._listener = asyncio.create_task(self._listen(), name="outbox-listen")

    async def stop(self) -> None:
        """Cancel both loops; the flag ends them too should a cancellation be swallowed on
        the way (3.11's wait_for can), and the wait is bounded either way."""
        self._stopping = True
        tasks = [t for t in (self._listener, self._task) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SECONDS)

    async def _run(self) -> None:
        backoff = Backoff(initial=0.05, maximum=self._idle_poll * 2)
        while not self._stopping:
            epoch = self._nc.epoch
            try:
                published = await self.publish_once()
            except Reconnected:  # the acks awaited went with the old connection: again, now
                continue
            except Exception as exc:
                log.warning("outbox.publish_failed", error=repr(exc))
                with contextlib.suppress(Reconnected):
                    await self._nc.unless_reconnected(epoch, backoff.sleep())
                continue
            backoff.reset()
            if published < self._window:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_poll):
                        await self._wake.wait()
                self._wake.clear()

    async def publish_once(self) -> int:
        """Publish up to one window of rows; returns how many were published."""
        epoch = self._nc.epoch
        js = self._nc.jetstream()
        t = self._table
        async with self._engine.begin() as conn:
            await conn.execute(_TURN, {"key": f"outbox\x1f{_channel(t)}"})
            rows = (
                await conn.execute(
                    select(t.c.id, t.c.event_id, t.c.subject, t.c.envelope, t.c.create_time)
                    .order_by(t.c.id)
                    .limit(self._window)
                )
            ).all()
            BACKLOG.set(len(rows))
            metrics.OUTBOX_OLDEST_AGE.set(metrics.seconds_since(rows[0].create_time) if rows else 0)
            if not rows:
                return 0
            acks = asyncio.gather(
                *(
                    js.publish(
                        r.subject, r.envelope, timeout=5, headers={"Nats-Msg-Id": r.event_id}
                    )
                    for r in rows
                )
            )
            # Acks awaited on a connection that is replaced meanwhile may never come: then
            # Reconnected ends the wait, the rows stay, and they are published again at once
            # (JetStream drops the copies that did arrive, by their Nats-Msg-Id).
            await self._nc.unless_reconnected(epoch, acks)
            await conn.execute(delete(t).where(t.c.id.in_([r.id for r in rows])))
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def _listen(self) -> None:
        """Wake the relay on NOTIFY; reconnect after a Postgres outage."""
        backoff = Backoff(maximum=self._idle_poll * 2)
        while not self._stopping:
            try:
                async with self._engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    assert driver is not None
                    closed = asyncio.Event()
                    driver.add_termination_listener(lambda *_, c=closed: c.set())
                    await driver.add_listener(_channel(self._table), lambda *_: self._wake.set())
                    backoff.reset()
                    await closed.wait()
            except Exception as exc:
                log.debug("outbox.listen_failed", error=repr(exc))
                await backoff.sleep()


def create_outbox(schema: str) -> None:
    """The outbox table, for a service's first Alembic migration."""
    from alembic import op  # noqa: PLC0415 - only migrations need alembic's op proxy

    op.create_table(
        "outbox",
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("event_id", Text, nullable=False, unique=True),
        Column("subject", Text, nullable=False),
        Column("envelope", LargeBinary, nullable=False),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
        schema=schema,
    )
