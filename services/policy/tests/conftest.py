"""A real policy server on a free port, on a fresh database and the session's NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from accord.policy.v1 import policy_service_pb2_grpc
from accord_kit.testing import channel
from accord_policy.app import App, migrate
from accord_policy.config import Settings


@pytest.fixture
async def policy_app(database_url: str, nats_url: str) -> AsyncIterator[App]:
    settings = Settings(
        database_url=database_url, nats_url=nats_url, port=0, metrics_port=0, health_interval=0.2
    )
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def policy(policy_app: App) -> AsyncIterator[policy_service_pb2_grpc.PolicyServiceStub]:
    async with channel(policy_app.port) as ch:
        yield policy_service_pb2_grpc.PolicyServiceStub(ch)
