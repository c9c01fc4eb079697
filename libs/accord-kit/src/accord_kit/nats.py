"""Connecting to NATS so that an outage is survived, not fatal, and is visible to health."""

from __future__ import annotations

import nats
import structlog
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import BadRequestError

from accord_kit.config import redacted

log = structlog.get_logger("accord.nats")


async def connect(url: str, name: str) -> Client:
    """Connect, then reconnect forever in the background when the server goes away."""

    async def on_disconnect() -> None:
        log.warning("nats.disconnected", url=redacted(url))

    async def on_reconnect() -> None:
        log.info("nats.reconnected", url=redacted(url))

    async def on_error(exc: Exception) -> None:
        log.debug("nats.error", error=repr(exc))

    return await nats.connect(
        url,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )


def nats_check(client: Client):  # type: ignore[no-untyped-def]
    """Health check: connected and the server answers a ping."""

    async def check() -> None:
        if not client.is_connected:
            raise ConnectionError("NATS is not connected")
        await client.flush(timeout=1)

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
