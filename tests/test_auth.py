"""Every RPC of every service, read from the published descriptors, refuses bad tokens.

The method list comes from the descriptor set compiled from protos/, so a new RPC is in
this table the moment it is defined: it must declare a scope, be served by a service in
`HOSTS`, and refuse a missing, expired, revoked, foreign-signed or under-scoped token.
All four services run for real, on one fresh database and the session's NATS.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from accord.common.v1 import auth_pb2
from accord.policy.v1 import token_service_pb2, token_service_pb2_grpc
from accord_audit.app import App as AuditApp
from accord_audit.app import migrate as migrate_audit
from accord_audit.config import Settings as AuditSettings
from accord_executor.app import App as ExecutorApp
from accord_executor.config import Settings as ExecutorSettings
from accord_kit import tokens
from accord_kit.testing import bearer, fresh_database, token
from accord_orchestrator.app import App as OrchestratorApp
from accord_orchestrator.app import migrate as migrate_orchestrator
from accord_orchestrator.config import Settings as OrchestratorSettings
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate as migrate_policy
from accord_policy.config import Settings as PolicySettings

# Which process serves each published service. A service missing here fails the suite.
HOSTS = {
    "accord.orchestrator.v1.JobService": "orchestrator",
    "accord.orchestrator.v1.ScheduleService": "orchestrator",
    "accord.orchestrator.v1.WorkerService": "orchestrator",
    "accord.orchestrator.v1.WorkflowService": "orchestrator",
    "accord.policy.v1.PolicyService": "policy",
    "accord.policy.v1.TokenService": "policy",
    "accord.executor.v1.ExecutorService": "executor",
    "accord.audit.v1.AuditService": "audit",
    "accord.audit.v2.AuditService": "audit",
}
PASSED_AUTH = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a long poll or a followed stream, cut short here
}


def published_methods() -> list[MethodDescriptor]:
    data = resources.files("accord").joinpath("descriptor_set.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    pool = descriptor_pool.Default()
    found = []
    for f in files:
        if not f.package.startswith("accord."):
            continue
        for service in pool.FindFileByName(f.name).services_by_name.values():
            found.extend(service.methods_by_name.values())
    return found


METHODS = published_methods()


def scope_of(method: MethodDescriptor) -> str:
    scope: str = method.GetOptions().Extensions[auth_pb2.required_scope]
    return scope


@dataclass
class Stack:
    ports: dict[str, int]
    channels: dict[str, grpc.aio.Channel]

    async def call(
        self, method: MethodDescriptor, metadata: tuple[tuple[str, str], ...]
    ) -> tuple[grpc.StatusCode, status_pb2.Status | None]:
        """Call with an empty request; a stream's first read stands for the call."""
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        channel = self.channels[HOSTS[method.containing_service.full_name]]
        path = f"/{method.containing_service.full_name}/{method.name}"
        make: Callable[..., Any] = (
            channel.unary_stream if method.server_streaming else channel.unary_unary
        )
        call = make(
            path,
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )(request_type(), metadata=metadata, timeout=3)
        try:
            if method.server_streaming:
                async for _ in call:
                    break
            else:
                await call
        except grpc.aio.AioRpcError as exc:
            return exc.code(), rpc_status.from_call(exc)  # type: ignore[arg-type]
        return grpc.StatusCode.OK, None


@pytest.fixture(scope="module")
async def stack(postgres_url: str, nats_url: str) -> AsyncIterator[Stack]:
    async with fresh_database(postgres_url) as database_url:
        common: dict[str, Any] = {
            "database_url": database_url,
            "nats_url": nats_url,
            "port": 0,
            "metrics_port": 0,
            "rate_limit": 10_000,
            "rate_limit_burst": 10_000,
        }
        policy_settings = PolicySettings(**common)
        await asyncio.to_thread(migrate_policy, policy_settings)
        policy = PolicyApp(policy_settings)
        await policy.start()
        orchestrator_settings = OrchestratorSettings(
            **common, policy_target=f"127.0.0.1:{policy.port}"
        )
        await asyncio.to_thread(migrate_orchestrator, orchestrator_settings)
        orchestrator = OrchestratorApp(orchestrator_settings)
        await orchestrator.start()
        audit_settings = AuditSettings(**common, durable_name=f"audit-auth-{uuid.uuid4().hex[:8]}")
        await asyncio.to_thread(migrate_audit, audit_settings)
        audit = AuditApp(audit_settings)
        await audit.start()
        executor = ExecutorApp(
            ExecutorSettings(
                nats_url=nats_url,
                port=0,
                metrics_port=0,
                orchestrator_target=f"127.0.0.1:{orchestrator.port}",
                browser_executable="/nonexistent/chromium",
                poll_wait_seconds=1.0,
            )
        )
        await executor.start()
        apps = {
            "policy": policy,
            "orchestrator": orchestrator,
            "audit": audit,
            "executor": executor,
        }
        ports = {name: app.port for name, app in apps.items()}
        channels = {n: grpc.aio.insecure_channel(f"127.0.0.1:{p}") for n, p in ports.items()}
        try:
            yield Stack(ports, channels)
        finally:
            for ch in channels.values():
                await ch.close()
            for app in (executor, audit, orchestrator, policy):
                await app.stop()


def test_every_published_service_is_hosted_and_every_rpc_declares_a_known_scope() -> None:
    services = {m.containing_service.full_name for m in METHODS}
    assert services == set(HOSTS), "a service was added or removed: update HOSTS"
    for method in METHODS:
        assert scope_of(method) in tokens.ALL_SCOPES, method.full_name


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo:
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError(f"no ErrorInfo in {status}")


def ids(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


@pytest.fixture(scope="module")
async def revoked(stack: Stack) -> str:
    """An all-scopes token that the policy service has revoked, seen revoked everywhere."""
    victim = token("acme", subject="test:revoked")
    admin = token("acme", ["tokens:admin"], subject="test:admin")
    stub = token_service_pb2_grpc.TokenServiceStub(stack.channels["policy"])
    await stub.RevokeToken(
        token_service_pb2.RevokeTokenRequest(
            token_id=tokens.unverified_claims(victim)["jti"], reason="auth matrix"
        ),
        metadata=bearer(admin),
    )
    probe = next(m for m in METHODS if m.name == "GetExecutorStatus")
    for _ in range(100):  # the executor is the last to hear of it, if any is
        code, _ = await stack.call(probe, bearer(victim))
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return victim
        await asyncio.sleep(0.1)
    raise AssertionError("the revocation did not reach the executor")


@pytest.fixture(scope="module")
def bad_tokens(revoked: str) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each way a caller can fail to authenticate, as call metadata."""
    return {
        "TOKEN_MISSING": (("accord-tenant", "acme"),),
        "TOKEN_EXPIRED": bearer(token("acme", ttl=timedelta(minutes=5), now=time.time() - 3600)),
        "REVOKED": bearer(revoked),
        "UNKNOWN_KEY": bearer(token("acme", key=tokens.generate_key())),
    }


@pytest.mark.parametrize("cause", ["TOKEN_MISSING", "TOKEN_EXPIRED", "REVOKED", "UNKNOWN_KEY"])
@pytest.mark.parametrize("method", METHODS, ids=ids)
async def test_a_bad_token_is_unauthenticated(
    stack: Stack,
    bad_tokens: dict[str, tuple[tuple[str, str], ...]],
    method: MethodDescriptor,
    cause: str,
) -> None:
    code, status = await stack.call(method, bad_tokens[cause])
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(status).metadata["cause"] == cause


@pytest.mark.parametrize("method", METHODS, ids=ids)
async def test_a_token_without_the_scope_is_permission_denied(
    stack: Stack, method: MethodDescriptor
) -> None:
    scope = scope_of(method)
    others = [s for s in tokens.ALL_SCOPES if s != scope]
    for tenant in ("acme", tokens.SERVICE_TENANT):
        code, status = await stack.call(
            method, (*bearer(token(tenant, others)), ("accord-tenant", "acme"))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED, tenant
        assert error_info(status).metadata["required_scope"] == scope


@pytest.mark.parametrize("method", METHODS, ids=ids)
async def test_the_scope_alone_gets_past_auth(stack: Stack, method: MethodDescriptor) -> None:
    """The control: the same calls with just the right scope are no longer refused."""
    only = token(tokens.SERVICE_TENANT, [scope_of(method)], subject="test:scoped")
    code, status = await stack.call(method, (*bearer(only), ("accord-tenant", "acme")))
    assert code in PASSED_AUTH, (code, status)
