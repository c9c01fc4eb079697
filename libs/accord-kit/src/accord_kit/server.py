"""The gRPC server every service runs: boundary, auth, TLS, health, reflection, metrics, drain.

Health reflects real dependencies: a monitor runs each registered check on an interval and
flips every service to NOT_SERVING while any check fails, back to SERVING when all pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge, start_http_server

from accord_kit import nats as knats
from accord_kit.auth import Authenticator
from accord_kit.boundary import BoundaryInterceptor
from accord_kit.config import ServiceSettings
from accord_kit.transport import MESSAGE_LIMITS, server_credentials

log = structlog.get_logger("accord.server")

Check = Callable[[], Awaitable[None]]
"""A dependency check: returns when healthy, raises when not."""

DEPENDENCY_UP = Gauge("accord_dependency_up", "1 while a dependency check passes", ["dependency"])
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Server:
    """One grpc.aio server with Accord's standard endpoints around the given servicers."""

    def __init__(self, settings: ServiceSettings) -> None:
        """Raises auth.ConfigError when authentication is on but no keys are configured."""
        self.settings = settings
        self.port = settings.port
        self.metrics_port = settings.metrics_port
        self.health = HealthServicer()
        self.auth = Authenticator.from_settings(settings)
        self._grpc = grpc.aio.server(
            interceptors=[BoundaryInterceptor(self.auth, _page_token_key(settings))],
            options=[*MESSAGE_LIMITS, ("grpc.so_reuseport", 0)],
        )
        self._names: list[str] = []
        self._checks: dict[str, Check] = {}
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._metrics: Any = None

    def add(self, name: str, adder: Callable[[Any, grpc.aio.Server], None], servicer: Any) -> None:
        """Register a servicer under its full name, e.g. `accord.policy.v1.PolicyService`."""
        adder(servicer, self._grpc)
        self._names.append(name)

    def check(self, dependency: str, check: Check) -> None:
        self._checks[dependency] = check

    async def use_nats(self, nc: knats.Connection) -> None:
        """NATS carries the revocation list every call is checked against; health watches it."""
        self.check("nats", knats.nats_check(nc))
        if self.auth.enabled:
            await self.auth.revocations.follow(nc)

    async def start(self) -> None:
        if self.auth.enabled and not self.auth.revocations.following:
            raise RuntimeError("auth is on but the revocation list is not followed: use_nats()")
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            [
                *self._names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._grpc,
        )
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(self.settings)
        self.port = (
            self._grpc.add_secure_port(address, credentials)
            if credentials is not None
            else self._grpc.add_insecure_port(address)
        )
        self._metrics, _ = start_http_server(self.settings.metrics_port, self.settings.host)
        self.metrics_port = self._metrics.server_port
        await self._set_all(NOT_SERVING)
        await self._grpc.start()
        await self._probe()
        self._monitor = asyncio.create_task(self._watch_dependencies(), name="health-monitor")
        log.info(
            "server.started", port=self.port, metrics_port=self.metrics_port, services=self._names
        )

    async def stop(self) -> None:
        """Stop taking calls, let in-flight ones finish within the drain window, then stop."""
        await self.health.enter_graceful_shutdown()
        if self._monitor is not None:
            # A flag, not only cancel(): on 3.11 wait_for inside a probe can swallow a cancel.
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._monitor), timeout=5)
            except TimeoutError:
                self._monitor.cancel()
        await self._grpc.stop(self.settings.drain_seconds)
        await self.auth.revocations.stop()
        if self._metrics is not None:
            self._metrics.shutdown()
        log.info("server.stopped")

    async def _set_all(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ["", *self._names]:
            await self.health.set(name, status)

    async def _probe(self) -> None:
        healthy = True
        for dependency, check in self._checks.items():
            try:
                await asyncio.wait_for(check(), timeout=max(1.0, self.settings.health_interval * 2))
                DEPENDENCY_UP.labels(dependency).set(1)
            except Exception as exc:
                DEPENDENCY_UP.labels(dependency).set(0)
                log.warning("health.dependency_down", dependency=dependency, error=repr(exc))
                healthy = False
        await self._set_all(SERVING if healthy else NOT_SERVING)

    async def _watch_dependencies(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.health_interval)
                return
            await self._probe()


def _page_token_key(settings: ServiceSettings) -> bytes:
    if settings.page_token_key is not None:
        return settings.page_token_key.get_secret_value().encode()
    log.warning(
        "server.page_token_key_unset",
        consequence="page tokens work only on this process; set ACCORD_PAGE_TOKEN_KEY",
    )
    return secrets.token_bytes(32)


async def wait_for_shutdown_signal() -> None:
    """Block until SIGTERM or SIGINT; the caller then stops its components in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
