"""PostgreSQL LISTEN/NOTIFY: wake a loop in every process when a change commits.

`notify` goes in the changing transaction (delivered at commit, never for a rollback);
`listen` holds one pooled connection, calls back on every notification, and listens again
after a Postgres outage. A lost notification must only delay, never lose, work: listeners
keep a fallback poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accord_kit.backoff import Backoff

log = structlog.get_logger("accord.notify")


async def notify(conn: AsyncConnection, channel: str) -> None:
    await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})


async def listen(
    engine: AsyncEngine, channel: str, on_notify: Callable[[], None], *, max_backoff: float = 5.0
) -> None:
    """Call `on_notify` for each notification on `channel`, until cancelled."""
    backoff = Backoff(maximum=max_backoff)
    while True:
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                closed = asyncio.Event()
                driver.add_termination_listener(lambda *_, c=closed: c.set())
                await driver.add_listener(channel, lambda *_: on_notify())
                backoff.reset()
                on_notify()  # anything changed while not listening is looked at now
                await closed.wait()
        except Exception as exc:
            log.debug("notify.listen_failed", channel=channel, error=repr(exc))
            await backoff.sleep()
