"""The revocation list: a JetStream key-value bucket every service follows into memory.

One key per revoked token id. The bucket is file-backed, so the list survives restarts of
NATS and of every service; each service keeps a live watch on it, so a revocation reaches
all of them within moments and checking a token costs a set lookup. Entries expire a day
after the longest a token can live, when they can no longer matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import asdict, dataclass

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KV_DEL, KV_MARKER_REASON, KV_OP, KV_PURGE, KeyValue

from accord_kit.backoff import Backoff
from accord_kit.nats import Connection, Reconnected
from accord_kit.tokens import MAX_TTL, tenant_of

log = structlog.get_logger("accord.revocations")

BUCKET = "accord_revocations"
LOAD_TIMEOUT = 10.0
RETRY_MAX = 2.0
"""Longest pause, in seconds, between attempts to watch while NATS is unreachable."""


@dataclass(frozen=True)
class Revocation:
    token_id: str
    reason: str
    revoked_by: str
    revoked_at: float
    expires_at: float | None
    # The tenant whose token it is (see tokens.tenant_of); None for a service token's.
    tenant: str | None = None


async def bucket(nc: Client) -> KeyValue:
    js = nc.jetstream()
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        config = KeyValueConfig(
            bucket=BUCKET,
            description="Revoked Accord token ids",
            history=1,
            storage=StorageType.FILE,
            ttl=(MAX_TTL.total_seconds() + 86400),
        )
        return await js.create_key_value(config)


class Revocations:
    """The set of revoked token ids, kept current from the bucket.

    A watch applies each revocation as it is written. A fresh read of the whole bucket
    replaces it as soon as the NATS connection is re-established (a watch does not
    outlive a restart or a hung server) and every RESYNC_SECONDS regardless, so a service
    never keeps serving on a list it stopped hearing.
    """

    RESYNC_SECONDS = 30.0

    def __init__(self) -> None:
        self._revoked: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def __contains__(self, token_id: str) -> bool:
        return token_id in self._revoked

    @property
    def following(self) -> bool:
        return self._task is not None

    async def follow(self, nc: Connection) -> None:
        """Load the whole list, then keep it current in the background."""
        await bucket(nc)  # fail now, not in the background, when there is no JetStream
        loaded = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(nc, loaded), name="revocations")
        await asyncio.wait_for(asyncio.shield(loaded), LOAD_TIMEOUT)
        log.info("revocations.loaded", count=len(self._revoked))

    async def _run(self, nc: Connection, loaded: asyncio.Future[None]) -> None:
        backoff = Backoff(maximum=RETRY_MAX)
        while True:
            epoch = nc.epoch
            try:
                await nc.unless_reconnected(epoch, self._watch_once(nc, loaded))
                backoff.reset()
            except Reconnected:
                log.info("revocations.rewatch", reason="reconnected")
                backoff.reset()
            except Exception as exc:
                log.warning("revocations.watch_failed", error=repr(exc))
                with contextlib.suppress(Reconnected):
                    await nc.unless_reconnected(epoch, backoff.sleep())

    async def _watch_once(self, nc: Connection, loaded: asyncio.Future[None]) -> None:
        # The watch starts first, so nothing written while the snapshot is read is missed; it
        # then replays the bucket again on top of the snapshot, which changes nothing. Its own
        # end-of-replay marker is not used: nats-py can send it before the replay (when the
        # server has delivered but the client not yet read), which would swap in a short list.
        watcher = await (await bucket(nc)).watchall()
        until = asyncio.get_running_loop().time() + self.RESYNC_SECONDS
        try:
            self._revoked = {entry.token_id for entry in await listed(nc)}
            if not loaded.done():
                loaded.set_result(None)
            while (left := until - asyncio.get_running_loop().time()) > 0:
                try:
                    entry = await watcher.updates(timeout=left)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    return
                if entry is None:
                    continue
                if entry.operation in (KV_DEL, KV_PURGE):
                    self._revoked.discard(entry.key)
                else:
                    self._revoked.add(entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def revoke(
    nc: Client, token_id: str, *, reason: str, revoked_by: str, expires_at: float | None
) -> tuple[Revocation, bool]:
    """Put a token on the list. Returns the stored entry and whether it is new."""
    kv = await bucket(nc)
    entry = Revocation(token_id, reason, revoked_by, time.time(), expires_at, tenant_of(token_id))
    try:
        await kv.create(token_id, json.dumps(asdict(entry)).encode())
    except KeyWrongLastSequenceError:  # already on the list
        existing = await _get(kv, token_id)
        if existing is None:
            raise
        return existing, False
    return entry, True


async def listed(nc: Client, tenant: str | None = None) -> list[Revocation]:
    """The list, oldest revocation first: every entry, or only `tenant`'s tokens.

    It reads the bucket's last value per key through a pull consumer, which counts what is
    left in each message it hands over, so the read ends exactly at the end of the bucket.
    """
    await bucket(nc)
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=LOAD_TIMEOUT,
        mem_storage=True,
    )
    js = nc.jetstream()
    sub = await js.pull_subscribe(f"$KV.{BUCKET}.>", stream=f"KV_{BUCKET}", config=config)
    entries: list[Revocation] = []
    try:
        left = (await sub.consumer_info()).num_pending or 0
        while left > 0:
            for msg in await sub.fetch(batch=min(left, 512), timeout=LOAD_TIMEOUT):
                left = msg.metadata.num_pending
                headers = msg.headers or {}
                if KV_OP in headers or KV_MARKER_REASON in headers or not msg.data:
                    continue  # deleted, purged or expired
                found = Revocation(**json.loads(msg.data))
                if tenant is None or found.tenant == tenant:
                    entries.append(found)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return sorted(entries, key=lambda e: (e.revoked_at, e.token_id))


async def _get(kv: KeyValue, token_id: str) -> Revocation | None:
    try:
        entry = await kv.get(token_id)
    except KeyNotFoundError:
        return None
    return Revocation(**json.loads(entry.value)) if entry.value else None
