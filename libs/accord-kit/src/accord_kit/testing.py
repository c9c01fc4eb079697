"""pytest fixtures for the real things: PostgreSQL, nats-server, gRPC channels.

By default the session starts its own embedded PostgreSQL and nats-server on free ports,
so the suite depends on nothing already running; ACCORD_TEST_DATABASE_URL and
ACCORD_TEST_NATS_URL point it at existing servers instead. Each test gets a fresh database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from accord_kit.caller import tenant_metadata
from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("ACCORD_TEST_DATABASE_URL"):
        yield url
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", free_port()) as pg:
        yield pg.url


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("ACCORD_TEST_NATS_URL"):
        yield url
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats"), free_port()) as server:
        yield server.url


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_plain(postgres_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_url.rsplit("/", 1)[0] + "/" + name
    admin = await asyncpg.connect(_plain(postgres_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def channel(port: int) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}")


def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for acting as `tenant`."""
    return tenant_metadata(tenant)


REPO_ROOT = Path(__file__).resolve().parents[4]
