"""Fixtures for tests that span services: a cluster of real servers, in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_executor.app import App as ExecutorApp
from accord_executor.config import Settings as ExecutorSettings
from accord_kit.testing import as_tenant, channel
from accord_orchestrator.app import App as OrchestratorApp
from accord_orchestrator.app import migrate
from accord_orchestrator.config import Settings as OrchestratorSettings
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate as migrate_policy
from accord_policy.config import Settings as PolicySettings

MD = as_tenant("acme")


@pytest.fixture
async def cluster(database_url: str, nats_url: str) -> AsyncIterator[int]:
    """Policy, orchestrator and three executors; yields the orchestrator's port."""
    common = {"database_url": database_url, "nats_url": nats_url, "port": 0, "metrics_port": 0}
    policy_settings = PolicySettings(**common)
    await asyncio.to_thread(migrate_policy, policy_settings)
    policy = PolicyApp(policy_settings)
    await policy.start()
    settings = OrchestratorSettings(**common, policy_target=f"127.0.0.1:{policy.port}")
    await asyncio.to_thread(migrate, settings)
    orchestrator = OrchestratorApp(settings)
    await orchestrator.start()
    executors = [
        ExecutorApp(
            ExecutorSettings(
                nats_url=nats_url,
                port=0,
                metrics_port=0,
                orchestrator_target=f"127.0.0.1:{orchestrator.port}",
                policy_target=f"127.0.0.1:{policy.port}",
                worker_id=f"executor-{i}",
                concurrency=4,
                prefetch=2,
                poll_wait_seconds=1.0,
                browser_executable="/nonexistent/chromium",
            )
        )
        for i in range(3)
    ]
    for executor in executors:
        await executor.start()
    async with channel(policy.port) as ch:
        await policy_service_pb2_grpc.PolicyServiceStub(ch).CreatePolicy(
            policy_service_pb2.CreatePolicyRequest(
                request_id="local",
                policy=policy_pb2.Policy(
                    display_name="local site",
                    rules=policy_pb2.PolicyRules(
                        allowed_domains=["127.0.0.1"], allow_private_networks=True
                    ),
                ),
            ),
            metadata=MD,
        )
    try:
        yield orchestrator.port
    finally:
        for executor in executors:
            await executor.stop()
        await orchestrator.stop()
        await policy.stop()
