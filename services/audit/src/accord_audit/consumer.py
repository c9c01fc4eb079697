"""The consumer: pulls every producer's stream through a durable JetStream consumer and
appends each event to the log, then acks it. Outages are waited out, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from accord.events.v1 import envelope_pb2
from accord_audit.config import Settings
from accord_audit.domain.records import Event, MalformedEvent, Record, parse_event
from accord_audit.service import AuditUseCases
from accord_kit import events, metrics, tracing
from accord_kit import nats as knats
from accord_kit.backoff import Backoff

log = structlog.get_logger("accord.audit.consumer")

APPENDED = Counter("accord_audit_appended_total", "Records appended to the audit log")
DUPLICATES = Counter("accord_audit_duplicates_total", "Redelivered events already in the log")
MALFORMED = Counter("accord_audit_malformed_total", "Messages dropped as not an EventEnvelope")


class Consumer:
    """One pull loop per producer stream; replicas share the durable consumer."""

    def __init__(self, nc: knats.Connection, cases: AuditUseCases, settings: Settings) -> None:
        self._nc = nc
        self._cases = cases
        self._settings = settings
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume(p), name=f"audit-consume-{p}")
            for p in self._settings.producers
        ]

    async def stop(self) -> None:
        """Stop pulling; a batch cut short is simply redelivered and appended once.

        The flag backs up the cancel: nats-py waits with asyncio.wait_for, which on 3.11
        can swallow a cancellation; the loops then end at their next turn instead.
        """
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _consume(self, producer: str) -> None:
        """Subscribe and pull; after a failure, subscribe again (stream and consumer too).

        The pull subscription outlives a reconnect: nats-py renews its interest and the
        durable consumer is kept by the server, so messages already on their way to it are
        not stranded. A consumer or stream that did not come back is an error from fetch,
        which lands here; the retry waits its backoff, or less if NATS reconnects meanwhile.
        """
        backoff = self._backoff()
        while not self._stopping:
            epoch = self._nc.epoch
            try:
                sub = await self._subscribe(producer)
                backoff.reset()
                await self._pull(sub)
            except Exception as exc:
                log.warning("audit.consume_failed", producer=producer, error=repr(exc))
                with contextlib.suppress(knats.Reconnected):
                    await self._nc.unless_reconnected(epoch, backoff.sleep())

    async def _subscribe(self, producer: str) -> JetStreamContext.PullSubscription:
        stream, subjects = events.stream_name(producer), events.stream_subjects(producer)
        await knats.ensure_stream(self._nc, stream, subjects)
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._settings.ack_wait,
        )
        durable = self._settings.durable_name
        js = self._nc.jetstream()
        with contextlib.suppress(NotFoundError):
            info = await js.consumer_info(stream, durable)
            if info.num_ack_pending:
                # A process died holding a batch: JetStream would redeliver it only after
                # ack_wait, behind newer events, and the log would hold a job's changes out
                # of order. Start again from the first unacknowledged event instead; what
                # was appended already is skipped by its event id.
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                await js.delete_consumer(stream, durable)
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = (floor or 0) + 1
                log.info("audit.consumer_rewound", producer=producer, from_seq=floor + 1)
        return await js.pull_subscribe(subjects[0], durable=durable, stream=stream, config=config)

    async def _pull(self, sub: JetStreamContext.PullSubscription) -> None:
        try:
            while not self._stopping:
                try:
                    msgs = await sub.fetch(
                        self._settings.batch_size, timeout=self._settings.fetch_timeout
                    )
                except TimeoutError:  # nothing new (or NATS is reconnecting)
                    continue
                if not await self._append(_parse(msgs)):
                    return
                for msg in msgs:
                    await msg.ack()
                if len(msgs) < self._settings.batch_size and self._settings.linger:
                    await asyncio.sleep(self._settings.linger)  # let a trickle gather
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _append(self, batch: list[Event]) -> bool:
        """Append until Postgres takes it (True) or the consumer stops (False).

        Meanwhile the messages stay unacked, so JetStream still owes them to some replica.
        """
        backoff = self._backoff()
        while not self._stopping:
            try:
                appended = await self._cases.append(batch)
            except Exception as exc:
                delay = backoff.next()
                log.warning("audit.append_failed", error=repr(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            _observe(appended)
            APPENDED.inc(len(appended))
            DUPLICATES.inc(len(batch) - len(appended))
            return True
        return False

    def _backoff(self) -> Backoff:
        return Backoff(initial=self._settings.retry_initial, maximum=self._settings.retry_max)


_producers = metrics.Bounded(16)


def _observe(appended: list[Record]) -> None:
    """Audit lag (event time to commit) per record; while tracing is on, each append is a
    span in the trace its event carries."""
    for r in appended:
        producer = _producers(r.event.event_type.split(".")[1])
        metrics.AUDIT_LAG.labels(producer).observe(metrics.seconds_since(r.event.event_time))
        if tracing.enabled():
            parent = envelope_pb2.EventEnvelope.FromString(r.event.envelope).trace.traceparent
            attributes = {"accord.event_type": r.event.event_type, "accord.index": r.index}
            if parent:  # events of untraced work start no trace of their own
                tracing.mark("audit.append", parent, attributes)


def _parse(msgs: list[Msg]) -> list[Event]:
    """The events of a batch; malformed messages are logged and left out (then acked)."""
    parsed: list[Event] = []
    for msg in msgs:
        try:
            parsed.append(parse_event(msg.data))
        except MalformedEvent as exc:
            MALFORMED.inc()
            log.error("audit.malformed_message", subject=msg.subject, error=str(exc))
    return parsed
