"""A real orchestrator and a real policy server on free ports, fresh database, shared NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from accord.orchestrator.v1 import job_service_pb2_grpc, worker_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit.testing import as_tenant, channel
from accord_orchestrator.app import App, migrate
from accord_orchestrator.config import Settings
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate as migrate_policy
from accord_policy.config import Settings as PolicySettings


@dataclass
class Stack:
    app: App
    policy_app: PolicyApp
    jobs: job_service_pb2_grpc.JobServiceStub
    worker: worker_service_pb2_grpc.WorkerServiceStub
    policies: policy_service_pb2_grpc.PolicyServiceStub


@pytest.fixture
async def stack(database_url: str, nats_url: str) -> AsyncIterator[Stack]:
    common = {"database_url": database_url, "nats_url": nats_url, "port": 0, "metrics_port": 0}
    policy_settings = PolicySettings(**common)
    await asyncio.to_thread(migrate_policy, policy_settings)
    policy_app = PolicyApp(policy_settings)
    await policy_app.start()
    settings = Settings(
        **common,
        policy_target=f"127.0.0.1:{policy_app.port}",
        reaper_interval=0.2,
        policy_timeout=2,
        metrics_interval=0.2,
    )
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    async with channel(app.port) as ch, channel(policy_app.port) as pch:
        policies = policy_service_pb2_grpc.PolicyServiceStub(pch)
        for tenant in ("acme", "other"):
            await policies.CreatePolicy(
                policy_service_pb2.CreatePolicyRequest(
                    request_id="allow-example",
                    policy=policy_pb2.Policy(
                        display_name="example",
                        rules=policy_pb2.PolicyRules(
                            allowed_domains=["example.com", "*.example.com"]
                        ),
                    ),
                ),
                metadata=as_tenant(tenant),
            )
        stack = Stack(
            app,
            policy_app,
            job_service_pb2_grpc.JobServiceStub(ch),
            worker_service_pb2_grpc.WorkerServiceStub(ch),
            policies,
        )
        yield stack
    await stack.app.stop()
    await stack.policy_app.stop()  # a test may have replaced it with a restarted one
