"""Connecting to NATS so that an outage is survived, not fatal, and is visible to health.

A server that hangs (paused, swapping, partitioned) keeps its TCP connections open, so no
read or write fails: only pings tell. Clients ping every PING_INTERVAL seconds and give the
connection up as stale after MAX_OUTSTANDING_PINGS go unanswered, then reconnect; nats-py's
defaults (120 s, 2) take four to six minutes to notice. Health asks for a round trip of its
own, so it turns NOT_SERVING within a second or two of the server going quiet.

nats-py renews plain subscriptions on a reconnect, but not everything on a connection comes
through whole: a KV watch's ephemeral consumer may be gone, and a request sent on the old
connection may never be answered. So `Connection` counts reconnects (`epoch`) and lets its
users wait on one (`until_reconnected`, `unless_reconnected`) to renew what they hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from accord_kit.config import redacted

log = structlog.get_logger("accord.nats")

T = TypeVar("T")

PING_INTERVAL = 2
"""Seconds between the client's pings to the server."""
MAX_OUTSTANDING_PINGS = 2
"""Unanswered pings after which the connection is stale: a hung server is left in 4-6 s."""
CHECK_TIMEOUT = 1
"""Seconds the health check waits for the server to answer a ping."""
RECONNECT_WAIT = 0.5
"""Seconds between attempts to reach the same server again (nats-py's own fixed wait)."""


class Reconnected(Exception):
    """The connection was re-established while waiting: state tied to the old one is suspect."""


class Connection(Client):
    """nats-py's client, repaired for hung servers, counting its reconnects. Use `connect`."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        """How many times this connection has been re-established."""
        self._epoch_changed = asyncio.Event()

    async def until_reconnected(self, epoch: int) -> None:
        """Return once the connection has been re-established since `epoch` was read."""
        while self.epoch == epoch:
            await self._epoch_changed.wait()

    async def unless_reconnected(self, epoch: int, work: Awaitable[T]) -> T:
        """`work`'s result, unless the connection is re-established first (since `epoch`).

        Then `work` is cancelled and Reconnected raised: a reply awaited on the old
        connection may never come, so the caller retries on the new one at once.
        """
        task = asyncio.ensure_future(work)
        lost = asyncio.ensure_future(self.until_reconnected(epoch))
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, lost):
                if not pending.done():
                    pending.cancel()
                    # Collected, not awaited: a wait_for inside may hold on to a cancel
                    # (Python 3.11) and the caller must not wait out its timeout.
                    pending.add_done_callback(_collect)
        if task.done() and not task.cancelled():
            return task.result()
        raise Reconnected

    def _reconnected(self) -> None:
        self.epoch += 1
        changed, self._epoch_changed = self._epoch_changed, asyncio.Event()
        changed.set()

    async def _process_pong(self) -> None:
        # nats-py 2.16 resolves the oldest ping's future without looking at it. A flush or
        # rtt that timed out has cancelled its future, so set_result raises, and the read
        # loop ends quietly: the client still says CONNECTED, flush() falls back to a no-op
        # that succeeds, and nothing is read again until the ping interval gives the
        # connection up. Each PONG answers the oldest PING; a cancelled waiter is skipped.
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


def _collect(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def connect(url: str, name: str) -> Connection:
    """Connect, then reconnect forever in the background when the server goes away."""
    nc = Connection()

    async def on_disconnect() -> None:
        log.warning("nats.disconnected", url=redacted(url))

    async def on_reconnect() -> None:
        log.info("nats.reconnected", url=redacted(url))
        nc._reconnected()

    async def on_error(exc: Exception) -> None:
        log.debug("nats.error", error=repr(exc))

    await nc.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]  # typed int, used as float
        connect_timeout=5,
        allow_reconnect=True,
        ping_interval=PING_INTERVAL,
        max_outstanding_pings=MAX_OUTSTANDING_PINGS,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
    return nc


def nats_check(client: Client) -> Callable[[], Awaitable[None]]:
    """Health check: connected, and the server answers a ping within CHECK_TIMEOUT.

    A real round trip (rtt, not flush): flush() reports success without one when the
    client's read loop has died, which is exactly when health must say so.
    """

    async def check() -> None:
        if not client.is_connected:
            raise ConnectionError("NATS is not connected")
        await client.rtt(timeout=CHECK_TIMEOUT)

    return check


async def ensure_stream(client: Client, name: str, subjects: list[str]) -> None:
    """Create the stream if missing; an existing stream is left as the operator set it."""
    js = client.jetstream()
    try:
        await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(StreamConfig(name=name, subjects=subjects, duplicate_window=120))
        except BadRequestError:  # another process created it first
            await js.stream_info(name)
