"""What the workflow tests run against: policy, orchestrator and one executor in process, a
local site whose pages the test rewrites, and a webhook receiver that checks signatures.
`browser_workflow_cluster` is the same with Chromium in the executor."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord.orchestrator.v1 import workflow_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_executor.app import App as ExecutorApp
from accord_executor.config import Settings as ExecutorSettings
from accord_executor.engines.browser import SYSTEM_CHROMIUM, find_browser
from accord_kit.net import free_port
from accord_kit.testing import as_tenant, channel, eventually
from accord_orchestrator.app import App as OrchestratorApp
from accord_orchestrator.app import migrate
from accord_orchestrator.config import Settings as OrchestratorSettings
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate as migrate_policy
from accord_policy.config import Settings as PolicySettings

MD = as_tenant("acme")
SECRET = "a-webhook-secret-of-the-test"
TOLERANCE = 300


@dataclass
class Site:
    """Pages served at `base`; the test sets `pages[path]` (body, status, delay). `asked`
    lists the paths requested, in order."""

    base: str
    pages: dict[str, tuple[str, int, float]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def set(self, path: str, body: str, status: int = 200, delay: float = 0.0) -> None:
        self.pages[path] = (body, status, delay)


@dataclass
class Receiver:
    """A webhook receiver: answers 500 to its first `fail_first` deliveries."""

    url: str
    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    accepted: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@dataclass
class Cluster:
    workflows: workflow_service_pb2_grpc.WorkflowServiceStub
    site: Site
    receiver: Receiver
    tls_site: str
    port: int  # the orchestrator's
    settings: OrchestratorSettings  # the orchestrator's, for replicas
    executor_port: int = 0


def verify(headers: dict[str, str], body: bytes, now: float) -> str | None:
    """A receiver's check, written from the documentation alone: why to refuse, or None."""
    stamp = headers.get("Accord-Webhook-Timestamp", "")
    if not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE:
        return "stale or missing timestamp"
    mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(headers.get("Accord-Webhook-Signature", ""), f"v1={mac}"):
        return "bad signature"
    return None


def short_lived_certificate(directory: Path, days: int) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 that expires in `days` days."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accord test site")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "site.pem", directory / "site.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _serve(
    app: web.Application, context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port("127.0.0.1")
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, port


def _site_app(site: Site) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        site.asked.append(request.path)
        if request.path not in site.pages:
            raise web.HTTPNotFound()
        body, status, delay = site.pages[request.path]
        if delay:
            await asyncio.sleep(delay)
        return web.Response(text=body, status=status, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


def _receiver_app(receiver: Receiver) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        receiver.received.append((headers, body))
        if len(receiver.received) <= receiver.fail_first:
            return web.Response(status=500)
        if verify(headers, body, time.time()) is not None:
            return web.Response(status=401)
        receiver.accepted.append((headers, body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


@pytest.fixture
async def workflow_cluster(
    database_url: str, nats_url: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    async with _running(database_url, nats_url, tmp_path, None) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium the browser workflows drive; their tests fail, not skip, without one."""
    if os.access(SYSTEM_CHROMIUM, os.X_OK):
        return SYSTEM_CHROMIUM
    probe = asyncio.run(find_browser(None))
    if probe.executable is None:
        pytest.fail(f"the browser tests need Chromium (make install): {probe.reason}")
    return probe.executable


@pytest.fixture
async def browser_workflow_cluster(
    database_url: str, nats_url: str, tmp_path: Path, chromium_path: str
) -> AsyncIterator[Cluster]:
    async with _running(database_url, nats_url, tmp_path, chromium_path) as cluster:
        yield cluster


@contextlib.asynccontextmanager
async def _running(
    database_url: str, nats_url: str, tmp_path: Path, chromium: str | None
) -> AsyncIterator[Cluster]:
    site = Site("")
    site_runner, site_port = await _serve(_site_app(site))
    site.base = f"http://127.0.0.1:{site_port}"
    receiver = Receiver("")
    hook_runner, hook_port = await _serve(_receiver_app(receiver))
    receiver.url = f"http://127.0.0.1:{hook_port}/hook"
    cert, key = short_lived_certificate(tmp_path, days=3)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tls_runner, tls_port = await _serve(_site_app(site), context)

    common = {"database_url": database_url, "nats_url": nats_url, "port": 0, "metrics_port": 0}
    # A robots.txt that failed is fetched again after a second, not a minute.
    policy_settings = PolicySettings(**common, robots_error_ttl=1.0)
    await asyncio.to_thread(migrate_policy, policy_settings)
    policy = PolicyApp(policy_settings)
    await policy.start()
    settings = OrchestratorSettings(
        **common,
        policy_target=f"127.0.0.1:{policy.port}",
        workflow_interval=0.1,
        webhook_key=base64.b64encode(os.urandom(32)).decode(),
        webhook_initial_backoff=0.05,
        webhook_max_backoff=0.2,
    )
    await asyncio.to_thread(migrate, settings)
    orchestrator = OrchestratorApp(settings)
    await orchestrator.start()
    executor = ExecutorApp(
        ExecutorSettings(
            nats_url=nats_url,
            port=0,
            metrics_port=0,
            orchestrator_target=f"127.0.0.1:{orchestrator.port}",
            policy_target=f"127.0.0.1:{policy.port}",
            worker_id="executor-workflows",
            concurrency=2,
            prefetch=0,
            poll_wait_seconds=1.0,
            # A missing path skips Playwright's driver probe, which costs a second per start.
            browser_executable=chromium or "/nonexistent/chromium",
            artifact_dir=str(tmp_path / "artifacts"),
            ca_file=str(cert),
        )
    )
    await executor.start()
    try:
        async with channel(policy.port) as pch, channel(orchestrator.port) as och:
            for tenant in ("acme", "other"):
                await policy_service_pb2_grpc.PolicyServiceStub(pch).CreatePolicy(
                    policy_service_pb2.CreatePolicyRequest(
                        request_id="local",
                        policy=policy_pb2.Policy(
                            display_name="local site",
                            rules=policy_pb2.PolicyRules(
                                allowed_domains=["127.0.0.1"],
                                allow_private_networks=True,
                                max_authorization_mode=js.AUTHORIZATION_MODE_INTERNAL,
                                # For internal checks of the TLS site, whose private CA
                                # only the executor trusts.
                                domain_rules=[
                                    policy_pb2.DomainRule(
                                        domain="127.0.0.1", ignore_robots_txt=True
                                    )
                                ],
                            ),
                        ),
                    ),
                    metadata=as_tenant(tenant),
                )
            yield Cluster(
                workflow_service_pb2_grpc.WorkflowServiceStub(och),
                site,
                receiver,
                f"https://127.0.0.1:{tls_port}",
                orchestrator.port,
                settings,
                executor.port,
            )
    finally:
        await executor.stop()
        await orchestrator.stop()
        await policy.stop()
        for runner in (site_runner, hook_runner, tls_runner):
            await runner.cleanup()


def hourly() -> wf.Workflow:
    """A workflow shell that runs once at creation, then hourly: the test runs the rest."""
    workflow = wf.Workflow(display_name=f"wf-{uuid.uuid4().hex[:8]}")
    workflow.calendar.interval.seconds = 3600
    return workflow


async def create(c: Cluster, workflow: wf.Workflow, hooked: bool = True) -> wf.Workflow:
    if hooked:
        workflow.webhooks.add(url=c.receiver.url, secret=SECRET)
    reply = await c.workflows.CreateWorkflow(
        wsp.CreateWorkflowRequest(request_id=uuid.uuid4().hex, workflow=workflow), metadata=MD
    )
    return reply.workflow


async def results(c: Cluster, workflow_id: str, count: int) -> list[wf.WorkflowResult]:
    """The workflow's results, oldest first, once there are `count` of them."""

    async def probe() -> list[wf.WorkflowResult] | None:
        reply = await c.workflows.ListWorkflowResults(
            wsp.ListWorkflowResultsRequest(workflow_id=workflow_id), metadata=MD
        )
        assert len(reply.results) <= count, reply.results
        return list(reversed(reply.results)) if len(reply.results) == count else None

    return await eventually(probe, 30, what=f"{count} results")


async def run(c: Cluster, workflow_id: str, count: int) -> wf.WorkflowResult:
    """Run the check now and return its result (the workflow's `count`th)."""
    reply = await c.workflows.RunWorkflow(
        wsp.RunWorkflowRequest(workflow_id=workflow_id, request_id=uuid.uuid4().hex), metadata=MD
    )
    assert reply.job_id
    found = await results(c, workflow_id, count)
    assert found[-1].job_id == reply.job_id
    return found[-1]


async def deliveries(c: Cluster, workflow: wf.Workflow, settled: int) -> list[wsp.WebhookDelivery]:
    """The webhook's deliveries, oldest first, once `settled` of them are no longer pending."""

    async def probe() -> list[wsp.WebhookDelivery] | None:
        reply = await c.workflows.ListWebhookDeliveries(
            wsp.ListWebhookDeliveriesRequest(
                workflow_id=workflow.workflow_id, webhook_id=workflow.webhooks[0].webhook_id
            ),
            metadata=MD,
        )
        done = [d for d in reply.deliveries if d.state != wsp.DELIVERY_STATE_PENDING]
        return list(reversed(reply.deliveries)) if len(done) >= settled else None

    return await eventually(probe, 30, what=f"{settled} settled deliveries")


def codes(err: grpc.aio.AioRpcError) -> grpc.StatusCode:
    return err.code()
