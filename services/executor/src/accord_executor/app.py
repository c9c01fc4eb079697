"""Wires the executor: engines, pools, the worker loop and the gRPC server; start and stop."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from accord.common.v1 import job_spec_pb2
from accord.executor.v1 import executor_service_pb2_grpc
from accord_executor.api import ExecutorApi
from accord_executor.artifacts import LocalArtifactStore
from accord_executor.config import Settings
from accord_executor.engines.browser import find_browser
from accord_executor.engines.browser_engine import BrowserEngine
from accord_executor.engines.chromium import BrowserHost
from accord_executor.engines.guard import Guard
from accord_executor.engines.http import HttpEngine, Runner
from accord_executor.engines.proxy import PolicingProxy
from accord_executor.pools import Engine, Pool, Pools
from accord_executor.service import ExecutorUseCases
from accord_executor.worker import CHANNEL_OPTIONS, Worker, orchestrator_check
from accord_kit import nats as knats
from accord_kit.errors import AccordError
from accord_kit.policy import PolicyClient
from accord_kit.server import Server
from accord_kit.transport import open_channel

SERVICE = "accord.executor.v1.ExecutorService"
HTTP = job_spec_pb2.ENGINE_HTTP
BROWSER = job_spec_pb2.ENGINE_BROWSER


log = structlog.get_logger("accord.executor.app")


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = Server(settings)

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        s = self.settings
        probe = await find_browser(s.browser_executable)
        self._policy = PolicyClient(s.policy_target, s.policy_timeout, s)
        self._http = HttpEngine(
            concurrency=s.concurrency,
            user_agent=s.user_agent,
            guard=Guard(self._policy),
            ca_file=s.ca_file,
        )
        await self._http.start()
        self.artifacts = LocalArtifactStore(s.artifact_dir)
        engines: dict[Engine, Runner] = {HTTP: self._http}
        browser = Pool(BROWSER, s.browser_concurrency, available=False)
        browser.unavailable_reason = probe.reason
        self._proxy: PolicingProxy | None = None
        self._host: BrowserHost | None = None
        if probe.executable is not None:
            try:
                engines[BROWSER] = await self._start_browser(probe.executable)
                browser.available = True
            except Exception as exc:  # HTTP jobs still run; browser jobs wait for another
                log.warning("browser.unavailable", error=repr(exc))
                browser.unavailable_reason = f"Chromium at {probe.executable} did not start: {exc}"
        self.pools = Pools(s.worker_id, [Pool(HTTP, s.concurrency, available=True), browser])
        self._pruning = asyncio.create_task(self._prune_loop(), name="artifact-prune")
        self._nc = await knats.connect(s.nats_url, "accord-executor")
        self._channel = open_channel(s.orchestrator_target, s, CHANNEL_OPTIONS)
        self.worker = Worker(s, self._channel, engines, self.pools)
        self.server.add(
            SERVICE,
            executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server,
            ExecutorApi(ExecutorUseCases(self.pools, engines, self._policy, self.artifacts)),
        )
        self.server.check("orchestrator", orchestrator_check(self._channel))
        await self.server.use_nats(self._nc)
        await self.server.start()
        await self.worker.follow_cancellations(self._nc)
        self.worker.start()

    async def _start_browser(self, executable: str) -> BrowserEngine:
        s = self.settings
        self._proxy = PolicingProxy(Guard(self._policy))
        self._host = BrowserHost(
            executable,
            proxy_port=await self._proxy.start(),
            user_agent=s.user_agent,
            recycle_after=s.browser_recycle_after,
            max_memory_mb=s.browser_max_memory_mb,
        )
        await self._host.start()
        return BrowserEngine(self._host, self._proxy, self.artifacts)

    @property
    def browser_host(self) -> BrowserHost | None:
        return self._host

    async def prune_artifacts(self) -> int | None:
        """Delete the artifacts past their tenant's retention (its policies', else ours); how
        many, or None when the policy service could not say: a tenant may keep artifacts
        longer than our default, so nothing is pruned without its answer."""
        try:
            kept = await self._policy.retentions()
        except AccordError as exc:
            log.warning("artifacts.prune_skipped", error=str(exc))
            return None
        seconds = {tenant: r.total_seconds() for tenant, r in kept.items()}
        return await self.artifacts.prune(self.settings.artifact_retention_seconds, seconds)

    async def _prune_loop(self) -> None:
        while True:
            try:
                deleted = await self.prune_artifacts()
            except OSError as exc:
                log.warning("artifacts.prune_failed", error=repr(exc))
            else:
                if deleted:
                    log.info("artifacts.pruned", deleted=deleted)
            await asyncio.sleep(self.settings.artifact_prune_interval)

    async def stop(self) -> None:
        # Queued work and direct RunJob calls drain side by side within the same window.
        await asyncio.gather(self.worker.stop(self.settings.drain_seconds), self.server.stop())
        self._pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pruning
        if self._host is not None:
            await self._host.close()
        if self._proxy is not None:
            await self._proxy.close()
        await self._http.close()
        await self._channel.close(grace=None)
        await self._policy.close()
        await self._nc.close()
