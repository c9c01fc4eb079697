"""Health follows real dependencies: NATS or Postgres stopping under a running service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port
from accord_policy.app import App, migrate
from accord_policy.config import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def wait_status(stub: health_pb2_grpc.HealthStub, want: int, service: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        got = (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status
        if got == want:
            return
        assert asyncio.get_running_loop().time() < deadline, f"health stayed {got}, wanted {want}"
        await asyncio.sleep(0.1)


async def test_health_turns_not_serving_while_a_dependency_is_down(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port())
    nats = EmbeddedNats(tmp_path / "nats", free_port())
    await asyncio.to_thread(pg.start)
    await asyncio.to_thread(nats.start)
    settings = Settings(
        database_url=pg.url, nats_url=nats.url, port=0, metrics_port=0, health_interval=0.2
    )
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            await wait_status(health, SERVING)
            watch = health.Watch(
                health_pb2.HealthCheckRequest(service="accord.policy.v1.PolicyService")
            )
            assert (await watch.read()).status == SERVING

            await asyncio.to_thread(nats.stop)
            assert (await asyncio.wait_for(watch.read(), 30)).status == NOT_SERVING
            await wait_status(health, NOT_SERVING)
            await asyncio.to_thread(nats.start)
            assert (await asyncio.wait_for(watch.read(), 30)).status == SERVING
            watch.cancel()

            await asyncio.to_thread(pg.stop)
            await wait_status(health, NOT_SERVING)
            await asyncio.to_thread(pg.start)
            await wait_status(health, SERVING)
    finally:
        await app.stop()
        await asyncio.to_thread(nats.stop)
        await asyncio.to_thread(pg.stop)
