"""A small real website on 127.0.0.1, an HTTP engine, and a real executor server on port 0.

RunJob asks the policy service first, so the executor runs beside a real policy server whose
tenant `default` (the test channel's) may fetch 127.0.0.1; `acme` has no policy: default deny.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from accord.common.v1 import job_spec_pb2
from accord.executor.v1 import executor_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_executor.app import App
from accord_executor.config import Settings
from accord_executor.engines.browser import SYSTEM_CHROMIUM, find_browser
from accord_executor.engines.http import HttpEngine
from accord_kit.testing import as_tenant, channel
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate as migrate_policy
from accord_policy.config import Settings as PolicySettings

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"
# The tenants the tests act for; the policy service allows each the local site.
TENANTS = ("default", "acme", "globex")

HOME = """<!doctype html>
<html><head><title>  Accord
  Test Site </title></head>
<body>
  <h1>Welcome to the test site</h1>
  <ul class="links">
    <li><a href="/about">About us</a></li>
    <li><a href="/jobs">Open <b>jobs</b></a></li>
    <li><a href="/status/404">Missing</a></li>
  </ul>
  <p class="price" data-amount="42">42 EUR</p>
</body></html>
"""


@dataclass
class Site:
    """The running site: its base URL and what the tests may wait on or release."""

    url: str
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hits: list[str] = field(default_factory=list)


def _routes(site: Site) -> web.RouteTableDef:
    routes = web.RouteTableDef()

    @routes.get("/")
    async def home(request: web.Request) -> web.Response:
        site.hits.append("/")
        return web.Response(text=HOME, content_type="text/html")

    @routes.get("/about")
    async def about(request: web.Request) -> web.Response:
        return web.Response(
            text="<title>About</title><p>We are Accord.</p>", content_type="text/html"
        )

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status page")

    @routes.route("*", "/echo")
    async def echo(request: web.Request) -> web.Response:
        seen = {
            "method": request.method,
            "user_agent": request.headers.get("User-Agent", ""),
            "x_token": request.headers.get("X-Token", ""),
            "cookie": request.cookies.get("session", ""),
            "body": (await request.read()).decode(),
        }
        return web.Response(text=json.dumps(seen), content_type="application/json")

    @routes.get("/login")
    async def login(request: web.Request) -> web.Response:
        response = web.Response(text="welcome")
        response.set_cookie("session", "s3cret")
        return response

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.Response:
        # Answers only when the test releases it (or the site shuts down).
        site.slow_started.set()
        await site.release.wait()
        return web.Response(text="<p>finally</p>", content_type="text/html")

    return routes


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    running = Site("")
    app = web.Application()
    app.router.add_routes(_routes(running))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    running.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield running
    running.release.set()
    await runner.cleanup()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium the browser tests drive; they fail, not skip, when there is none."""
    if os.access(SYSTEM_CHROMIUM, os.X_OK):
        return SYSTEM_CHROMIUM
    probe = asyncio.run(find_browser(None))
    if probe.executable is None:
        pytest.fail(f"the browser tests need Chromium (make install): {probe.reason}")
    return probe.executable


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def engine() -> AsyncIterator[HttpEngine]:
    http = HttpEngine(concurrency=4, user_agent=USER_AGENT)
    await http.start()
    yield http
    await http.close()


def _settings(orchestrator_port: int, nats_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "nats_url": nats_url,
        "port": 0,
        "metrics_port": 0,
        "health_interval": 0.2,
        "orchestrator_target": f"127.0.0.1:{orchestrator_port}",
        "worker_id": "test-worker",
        "concurrency": 4,
        "poll_wait_seconds": 1.0,
        "drain_seconds": 5.0,
        "policy_timeout": 2.0,
        # A missing path skips Playwright's driver probe, which costs a second per start.
        "browser_executable": "/nonexistent/chromium",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def executor_settings(nats_url: str, policy_app: PolicyApp) -> Callable[..., Settings]:
    """Test settings for an executor whose orchestrator listens on the given port, and whose
    every request is checked by a real policy service that allows the local site."""
    return functools.partial(
        _settings, nats_url=nats_url, policy_target=f"127.0.0.1:{policy_app.port}"
    )


@pytest.fixture
async def policy_app(database_url: str, nats_url: str) -> AsyncIterator[PolicyApp]:
    settings = PolicySettings(database_url=database_url, nats_url=nats_url, port=0, metrics_port=0)
    await asyncio.to_thread(migrate_policy, settings)
    app = PolicyApp(settings)
    await app.start()
    try:
        await _allow_local_site(app)
        yield app
    finally:
        await app.stop()


async def _allow_local_site(app: PolicyApp) -> None:
    rules = policy_pb2.PolicyRules(
        allowed_domains=["127.0.0.1"],
        allow_private_networks=True,
        # Internal jobs may skip robots.txt here: a test can then reach a closed port.
        max_authorization_mode=job_spec_pb2.AUTHORIZATION_MODE_INTERNAL,
        domain_rules=[policy_pb2.DomainRule(domain="127.0.0.1", ignore_robots_txt=True)],
    )
    async with channel(app.port) as ch:
        for tenant in TENANTS:
            await policy_service_pb2_grpc.PolicyServiceStub(ch).CreatePolicy(
                policy_service_pb2.CreatePolicyRequest(
                    request_id="local-site",
                    policy=policy_pb2.Policy(display_name="site", rules=rules),
                ),
                metadata=as_tenant(tenant),
            )


@pytest.fixture
async def executor_app(
    closed_port: int, nats_url: str, policy_app: PolicyApp, tmp_path: Path
) -> AsyncIterator[App]:
    """The executor with no orchestrator reachable: RunJob and status still work."""
    app = App(
        _settings(
            closed_port,
            nats_url,
            policy_target=f"127.0.0.1:{policy_app.port}",
            artifact_dir=str(tmp_path / "artifacts"),
        )
    )
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def executor(
    executor_app: App,
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceAsyncStub]:
    async with channel(executor_app.port) as ch:
        yield executor_service_pb2_grpc.ExecutorServiceStub(ch)
