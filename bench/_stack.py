"""PostgreSQL, NATS and the four Accord services as child processes on 127.0.0.1, for benchmarks.

Uses ACCORD_DATABASE_URL / ACCORD_NATS_URL when set; otherwise starts embedded servers in the
work directory. Everything started here is stopped on the way out, error or Ctrl-C alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_cli.auth import dev_credentials
from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port

HOST = "127.0.0.1"
SERVICES = ("policy", "orchestrator", "audit", "executor")
MIGRATING = ("policy", "orchestrator", "audit")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MIGRATE_TIMEOUT = 120.0


class StackError(Exception):
    """A service failed to migrate, start or stay up; the message carries its log's tail."""


@dataclass
class Stack:
    """The running services: where each listens, the environment they share, their logs."""

    workdir: Path
    ports: dict[str, int]
    env: dict[str, str]
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def target(self, name: str) -> str:
        return f"{HOST}:{self.ports[name]}"

    def check_alive(self) -> None:
        """Raise StackError when any service has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise StackError(f"{name} exited with code {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        try:
            return self.logs[name].read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


@contextlib.asynccontextmanager
async def running_stack(workdir: Path, settings: Mapping[str, str]) -> AsyncIterator[Stack]:
    """Start everything, yield the stack once every service is SERVING, then stop it all.

    `settings` are extra environment variables for the services (ACCORD_<SVC>_...).
    """
    with contextlib.ExitStack() as dependencies:
        env = dict(os.environ)
        if "ACCORD_DATABASE_URL" not in env:
            pg = EmbeddedPostgres(workdir / "postgres", free_port(HOST))
            await asyncio.to_thread(dependencies.enter_context, pg)
            env["ACCORD_DATABASE_URL"] = pg.url
        if "ACCORD_NATS_URL" not in env:
            nats = EmbeddedNats(workdir / "nats", free_port(HOST))
            await asyncio.to_thread(dependencies.enter_context, nats)
            env["ACCORD_NATS_URL"] = nats.url
        env |= dev_credentials(workdir).env
        # Clients of the bench sign their tokens with the stack's dev key, as `accord auth` does.
        os.environ["ACCORD_AUTH_SIGNING_KEY_FILE"] = env["ACCORD_AUTH_SIGNING_KEY_FILE"]
        stack = _plan(env | dict(settings), workdir)
        await _migrate(stack)
        try:
            _spawn_all(stack)
            for name in SERVICES:
                await _wait_serving(stack, name)
            yield stack
        finally:
            await asyncio.to_thread(_stop_all, stack)


def _plan(env: dict[str, str], workdir: Path) -> Stack:
    ports = {name: free_port(HOST) for name in SERVICES}
    for name in SERVICES:
        prefix = f"ACCORD_{name.upper()}_"
        env |= {
            f"{prefix}HOST": HOST,
            f"{prefix}PORT": str(ports[name]),
            f"{prefix}METRICS_PORT": str(free_port(HOST)),
        }
    env["ACCORD_ORCHESTRATOR_POLICY_TARGET"] = f"{HOST}:{ports['policy']}"
    env["ACCORD_EXECUTOR_ORCHESTRATOR_TARGET"] = f"{HOST}:{ports['orchestrator']}"
    env["ACCORD_EXECUTOR_POLICY_TARGET"] = f"{HOST}:{ports['policy']}"
    # Throughput is measured here, not throttling: one tenant's clients share a principal.
    for name in SERVICES:
        env.setdefault(f"ACCORD_{name.upper()}_RATE_LIMIT", "1000000")
        env.setdefault(f"ACCORD_{name.upper()}_RATE_LIMIT_BURST", "1000000")
    # A NATS server given from outside may be shared: a durable of our own sees our events.
    env.setdefault("ACCORD_AUDIT_DURABLE_NAME", f"audit-bench-{os.getpid()}")
    return Stack(workdir, ports, env, {name: workdir / f"{name}.log" for name in SERVICES})


async def _migrate(stack: Stack) -> None:
    for name in MIGRATING:
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", f"accord_{name}", "migrate"],
            env=stack.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=MIGRATE_TIMEOUT,
        )
        if done.returncode != 0:
            raise StackError(f"{name} migrations failed:\n{done.stderr[-3000:]}")


def _spawn_all(stack: Stack) -> None:
    for name in SERVICES:
        _spawn(stack, name)


def _spawn(stack: Stack, name: str) -> None:
    with stack.logs[name].open("ab") as log:
        stack.procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"accord_{name}"],
            env=stack.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: Ctrl-C reaches the bench only, which then stops them in order.
            start_new_session=True,
        )


async def stop_service(stack: Stack, name: str) -> None:
    """Stop one service (SIGTERM, then SIGKILL); `start_service` brings it back."""
    proc = stack.procs.pop(name)
    await asyncio.to_thread(_stop, [proc])


async def start_service(stack: Stack, name: str) -> None:
    """Start one service again on its old ports and wait until it is SERVING."""
    _spawn(stack, name)
    await _wait_serving(stack, name)


async def _wait_serving(stack: Stack, name: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    async with grpc.aio.insecure_channel(stack.target(name)) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            stack.check_alive()
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if loop.time() > deadline:
                raise StackError(
                    f"{name} not SERVING after {START_TIMEOUT:g}s:\n{stack.tail(name)}"
                )
            await asyncio.sleep(0.2)


def _stop_all(stack: Stack) -> None:
    """SIGTERM in reverse start order (executor first), then SIGKILL whatever lingers."""
    _stop([stack.procs[n] for n in reversed(SERVICES) if n in stack.procs])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
