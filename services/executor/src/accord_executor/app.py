"""Wires the executor: engines, pools, the worker loop and the gRPC server; start and stop."""

from __future__ import annotations

import asyncio

from accord.common.v1 import job_spec_pb2
from accord.executor.v1 import executor_service_pb2_grpc
from accord_executor.api import ExecutorApi
from accord_executor.config import Settings
from accord_executor.engines.browser import BrowserProbe, find_browser
from accord_executor.engines.guard import Guard
from accord_executor.engines.http import HttpEngine
from accord_executor.pools import Pool, Pools
from accord_executor.service import ExecutorUseCases
from accord_executor.worker import CHANNEL_OPTIONS, Worker, orchestrator_check
from accord_kit import nats as knats
from accord_kit.policy import PolicyClient
from accord_kit.server import Server
from accord_kit.transport import open_channel

SERVICE = "accord.executor.v1.ExecutorService"
HTTP = job_spec_pb2.ENGINE_HTTP
BROWSER = job_spec_pb2.ENGINE_BROWSER


def browser_pool(probe: BrowserProbe, capacity: int) -> Pool:
    # The browser engine itself arrives in a later release: until then a found Chromium
    # is reported, but the pool stays unavailable so browser jobs wait for an executor
    # that can run them instead of failing here.
    reason = (
        f"Chromium found at {probe.executable}, but this release has no browser engine"
        if probe.found
        else probe.reason
    )
    return Pool(BROWSER, capacity, available=False, unavailable_reason=reason)


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
        engines = {HTTP: self._http}
        self.pools = Pools(
            s.worker_id,
            [Pool(HTTP, s.concurrency, available=True), browser_pool(probe, s.concurrency)],
        )
        self._nc = await knats.connect(s.nats_url, "accord-executor")
        self._channel = open_channel(s.orchestrator_target, s, CHANNEL_OPTIONS)
        self.worker = Worker(s, self._channel, engines, self.pools)
        self.server.add(
            SERVICE,
            executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server,
            ExecutorApi(ExecutorUseCases(self.pools, engines, self._policy)),
        )
        self.server.check("orchestrator", orchestrator_check(self._channel))
        await self.server.use_nats(self._nc)
        await self.server.start()
        await self.worker.follow_cancellations(self._nc)
        self.worker.start()

    async def stop(self) -> None:
        # Queued work and direct RunJob calls drain side by side within the same window.
        await asyncio.gather(self.worker.stop(self.settings.drain_seconds), self.server.stop())
        await self._http.close()
        await self._channel.close(grace=None)
        await self._policy.close()
        await self._nc.close()
