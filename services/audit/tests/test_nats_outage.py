"""The audit service through a NATS outage: a 15 s pause (SIGSTOP) or a restart.

Its health must say NOT_SERVING while NATS is away; once NATS is back it must say SERVING,
append an event published then, and follow a revocation written then, all within seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Literal

import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_audit.app import App, migrate
from accord_audit.testing import Harness, eventually, settings_for
from accord_kit import revocations
from accord_kit.embedded import EmbeddedNats
from accord_kit.testing import channel, nats_outage

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OUTAGE_SECONDS = 15.0
# Recovery measured at about a second (bench/nats_outage.py); minutes before the fix.
RECOVERY = 10.0


async def wait_status(health: health_pb2_grpc.HealthStub, want: int, timeout: float) -> None:
    async def probe() -> bool | None:
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        return True if response.status == want else None

    await eventually(probe, timeout, what=health_pb2.HealthCheckResponse.ServingStatus.Name(want))


@pytest.mark.parametrize("kind", ["pause", "restart"])
async def test_the_consumer_and_health_recover_within_seconds(
    database_url: str, own_nats: EmbeddedNats, kind: Literal["pause", "restart"]
) -> None:
    producer = f"t{uuid.uuid4().hex[:12]}"
    settings = settings_for(database_url, own_nats.url, producer, f"a-{uuid.uuid4().hex[:8]}")
    settings.health_interval = 0.2
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    try:
        async with channel(app.port) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            await wait_status(health, SERVING, RECOVERY)
            loop = asyncio.get_running_loop()
            async with nats_outage(own_nats, kind):
                ends = loop.time() + OUTAGE_SECONDS
                await wait_status(health, NOT_SERVING, OUTAGE_SECONDS / 2)
                while (left := ends - loop.time()) > 0:  # NOT_SERVING while NATS is away
                    await wait_status(health, NOT_SERVING, 0)
                    await asyncio.sleep(min(0.5, left))

            await wait_status(health, SERVING, RECOVERY)
            writer = await nats.connect(own_nats.url)
            try:
                audit = Harness.over(app, ch, writer, producer, database_url)
                event = audit.event()
                await audit.publish(event)
                token_id = f"after-{kind}"
                await revocations.revoke(
                    writer, token_id, reason="t", revoked_by="t", expires_at=None
                )

                async def appended() -> bool | None:
                    return (
                        True
                        if event.event_id in {r.event_id for r in await audit.listed()}
                        else None
                    )

                async def followed() -> bool | None:
                    return True if token_id in app.server.auth.revocations else None

                await eventually(appended, RECOVERY, what="the event published after the outage")
                await eventually(followed, RECOVERY, what="the revocation written after it")
            finally:
                await writer.close()
    finally:
        await app.stop()
