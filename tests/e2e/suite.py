"""The four services as real processes on free loopback ports, plus a small local site."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_kit.net import free_port

SERVICES = ("policy", "orchestrator", "audit", "executor")
MIGRATING = ("policy", "orchestrator", "audit")


@dataclass
class Suite:
    ports: dict[str, int]
    env: dict[str, str]
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"


async def _wait_serving(target: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            assert proc.poll() is None, f"{target} exited:\n{log.read_text()[-3000:]}"
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.2)


@pytest.fixture
async def suite(database_url: str, nats_url: str, tmp_path: Path) -> AsyncIterator[Suite]:
    ports = {name: free_port() for name in SERVICES}
    env = dict(os.environ, ACCORD_DATABASE_URL=database_url, ACCORD_NATS_URL=nats_url)
    for name in SERVICES:
        p = f"ACCORD_{name.upper()}_"
        env |= {f"{p}PORT": str(ports[name]), f"{p}METRICS_PORT": str(free_port())}
        # Everything a service can log is captured, for the test that no secret is in it.
        env[f"{p}LOG_LEVEL"] = "debug"
    env["ACCORD_ORCHESTRATOR_POLICY_TARGET"] = f"127.0.0.1:{ports['policy']}"
    env["ACCORD_EXECUTOR_ORCHESTRATOR_TARGET"] = f"127.0.0.1:{ports['orchestrator']}"
    env["ACCORD_EXECUTOR_POLICY_TARGET"] = f"127.0.0.1:{ports['policy']}"
    env["ACCORD_EXECUTOR_POLL_WAIT_SECONDS"] = "1"
    # The suite's NATS may be shared: a durable of our own sees every event from the start.
    env["ACCORD_AUDIT_DURABLE_NAME"] = f"audit-{tmp_path.name}"[:60]
    suite = Suite(ports, env, {n: tmp_path / f"{n}.log" for n in SERVICES})
    for name in MIGRATING:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", f"accord_{name}", "migrate"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    for name in SERVICES:
        with suite.logs[name].open("wb") as log:
            suite.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"accord_{name}"], env=env, stdout=log, stderr=log
            )
    try:
        for name in SERVICES:
            await _wait_serving(suite.target(name), suite.procs[name], suite.logs[name])
        yield suite
    finally:
        for proc in suite.procs.values():
            proc.terminate()
        for proc in suite.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


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
