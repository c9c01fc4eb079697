"""The services as real processes through the kit's launcher, plus a small local site.

`suite`: one process per service on the session's PostgreSQL (a fresh database) and NATS,
shared by the tests of a module.
`launch`: stacks of their own (embedded PostgreSQL and NATS, replicas, settings), for
tests that break things; each is stopped when the test ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Mapping
from pathlib import Path
from typing import Protocol

import pytest
from aiohttp import web

from accord_kit.net import free_port
from accord_kit.stack import SERVICES, RestartPolicy, Stack
from accord_kit.testing import fresh_database

Suite = Stack


def service_env(log_level: str, **settings: str) -> dict[str, str]:
    """The test process's environment for a stack's services, with `settings` added."""
    env = dict(os.environ)
    for name in SERVICES:
        env[f"ACCORD_{name.upper()}_LOG_LEVEL"] = log_level
    env["ACCORD_EXECUTOR_POLL_WAIT_SECONDS"] = "1"
    return env | settings


@pytest.fixture(scope="module")
async def suite(
    postgres_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Shared by a module's tests, since starting four processes takes seconds: each test
    tells its own work apart by its ids, never by counting everything there is."""
    workdir = tmp_path_factory.mktemp("suite")
    async with fresh_database(postgres_url) as database_url:
        env = service_env(
            # Everything a service can log is captured, for the test that no secret is in it.
            "debug",
            ACCORD_DATABASE_URL=database_url,
            ACCORD_NATS_URL=nats_url,
            # The suite's NATS may be shared: a durable of our own sees every event from the
            # start.
            ACCORD_AUDIT_DURABLE_NAME=f"audit-{workdir.name}"[:60],
        )
        async with Stack(workdir, env=env).running() as stack:
            yield stack


class Launch(Protocol):
    def __call__(
        self, replicas: Mapping[str, int] | None = None, **settings: str
    ) -> Awaitable[Stack]: ...


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start a stack with its own PostgreSQL and NATS; `settings` are ACCORD_* variables."""
    numbers = itertools.count()
    async with contextlib.AsyncExitStack() as stacks:

        async def start(replicas: Mapping[str, int] | None = None, **settings: str) -> Stack:
            env = service_env("info", **settings)
            for given in ("ACCORD_DATABASE_URL", "ACCORD_NATS_URL"):
                env.pop(given, None)
            workdir = tmp_path / f"stack-{next(numbers)}"
            # Restart soon: a test waits for the process to come back.
            stack = Stack(workdir, env=env, replicas=replicas, restart=RestartPolicy(initial=0.2))
            return await stacks.enter_async_context(stack.running())

        yield start


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A small local website on a free port, served by the test's own event loop."""

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=INDEX, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/"
    await runner.cleanup()


INDEX = (
    "<html><head><title>Accord test site</title></head><body><h1>Openings</h1>"
    "<ul><li><a href='/a'>A</a></li><li><a href='/b'>B</a></li></ul></body></html>"
)
