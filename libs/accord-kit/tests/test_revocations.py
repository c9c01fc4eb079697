"""The revocation list as a service sees it: loaded before serving, live, and self-healing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import nats
from nats.aio.client import Client

from accord_kit import nats as knats
from accord_kit import revocations
from accord_kit.embedded import EmbeddedNats
from accord_kit.revocations import Revocations


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def revoke(nc: Client, token_id: str) -> None:
    await revocations.revoke(nc, token_id, reason="test", revoked_by="test", expires_at=None)


async def test_the_list_is_loaded_before_follow_returns_and_then_kept_live(
    own_nats: EmbeddedNats,
) -> None:
    nc = await knats.connect(own_nats.url, "follower")
    await revoke(nc, "before")
    seen = Revocations()
    seen.RESYNC_SECONDS = 0.5
    await seen.follow(nc)
    assert "before" in seen, "follow() returns only once the stored list is in memory"
    assert "later" not in seen
    await revoke(nc, "later")
    await eventually(lambda: "later" in seen)
    # A removed entry is dropped too (by the watch, or at the latest by the next replay).
    await (await revocations.bucket(nc)).delete("before")
    await eventually(lambda: "before" not in seen)
    entry, new = await revocations.revoke(
        nc, "later", reason="again", revoked_by="x", expires_at=None
    )
    assert (new, entry.reason) == (False, "test"), "a second revocation keeps the first"
    await seen.stop()
    await nc.close()


async def test_a_follower_recovers_after_nats_restarts(own_nats: EmbeddedNats) -> None:
    nc = await knats.connect(own_nats.url, "follower")
    seen = Revocations()  # the periodic replay (30 s) is too late: the reconnect renews the watch
    await seen.follow(nc)
    await asyncio.to_thread(own_nats.stop)
    await asyncio.to_thread(own_nats.start)
    writer = await nats.connect(own_nats.url)
    await revoke(writer, "after-restart")
    await eventually(lambda: "after-restart" in seen, timeout=10)
    await seen.stop()
    await writer.close()
    await nc.close()
