"""A real audit server on a free port, on a fresh database and the session's NATS.

Each test gets its own producer name, hence its own JetStream stream, and its own durable
consumer name, because the NATS server may be shared with other tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from accord_audit.app import App, migrate
from accord_audit.testing import Harness, settings_for
from accord_kit import events
from accord_kit import nats as knats
from accord_kit.testing import channel


@pytest.fixture
def producer() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def nc(nats_url: str, producer: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    # Created here so a test can publish before the consumer's first pass; the service
    # leaves an existing stream as it is.
    await knats.ensure_stream(
        client, events.stream_name(producer), events.stream_subjects(producer)
    )
    yield client
    with contextlib.suppress(Exception):
        await client.jetstream().delete_stream(events.stream_name(producer))
    await client.close()


@pytest.fixture
async def audit_app(
    database_url: str, nats_url: str, producer: str, nc: Client
) -> AsyncIterator[App]:
    settings = settings_for(database_url, nats_url, producer, f"audit-{uuid.uuid4().hex[:12]}")
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def audit(
    audit_app: App, nc: Client, producer: str, database_url: str
) -> AsyncIterator[Harness]:
    async with channel(audit_app.port) as ch:
        yield Harness.over(audit_app, ch, nc, producer, database_url)
