"""Every request a job sends is decided where it is sent: hops, run-time URLs, outages.

All hosts are loopback. The site listens on 127.0.0.1, which the tenant's policy allows;
the canary listens on 127.0.0.2, which no policy allows, and logs every request it gets,
so "nothing arrived" is read from the canary's own log. Names resolve through a resolver
the test controls, to loopback addresses, in the policy service: the executor never asks
DNS, so a name only it could not resolve proves the request went to the checked address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.policy.v1 import policy_pb2, policy_service_pb2_grpc
from accord.policy.v1 import policy_service_pb2 as pb
from accord_executor.config import Settings
from accord_executor.domain import results as r
from accord_executor.engines.guard import Guard
from accord_executor.engines.http import HttpEngine
from accord_kit.policy import PolicyClient
from accord_kit.testing import as_tenant, channel
from accord_policy.app import App as PolicyApp
from accord_policy.app import migrate
from accord_policy.config import Settings as PolicySettings
from accord_policy.domain.addresses import Address

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"
TENANT = "acme"
FAILED = job_result_pb2.STEP_STATUS_FAILED
SUCCEEDED = job_result_pb2.STEP_STATUS_SUCCEEDED


@dataclass
class Server:
    """A loopback web server and the log of what reached it."""

    host: str
    port: int = 0
    hits: list[str] = field(default_factory=list)
    peers: list[int] = field(default_factory=list)  # client port of each request's connection
    running: int = 0
    most_at_once: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _app(server: Server, canary: Server | None) -> web.Application:
    async def any_path(request: web.Request) -> web.StreamResponse:
        server.hits.append(request.path)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        server.peers.append(peer[1] if peer else 0)
        if request.path == "/robots.txt":  # fetched by the policy service, not by jobs
            return web.Response(status=404)
        server.running += 1
        server.most_at_once = max(server.most_at_once, server.running)
        try:
            return await _answer(request, server, canary)
        finally:
            server.running -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    return app


async def _answer(request: web.Request, server: Server, canary: Server | None) -> web.Response:
    path = request.path
    if path == "/redirect-chain":
        raise web.HTTPFound("/hop")
    if path == "/hop" and canary is not None:
        raise web.HTTPFound(f"{canary.url}/secret")
    if path == "/link" and canary is not None:
        return web.Response(
            text=f'<a id="g" href="{canary.host}:{canary.port}/secret">x</a>',
            content_type="text/html",
        )
    if path == "/slow":
        server.slow_started.set()
        await server.release.wait()
    if path == "/busy":
        await asyncio.sleep(0.05)
    return web.Response(text=f"<title>{server.host}{path}</title>", content_type="text/html")


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Server, Server]]:
    """(site on 127.0.0.1, canary on 127.0.0.2)."""
    canary, site = Server("127.0.0.2"), Server("127.0.0.1")
    runners = []
    for server, other in ((canary, None), (site, canary)):
        runner = web.AppRunner(_app(server, other), shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, server.host, 0).start()
        server.port = runner.addresses[0][1]
        runners.append(runner)
    yield site, canary
    site.release.set()
    for runner in runners:
        await runner.cleanup()


@dataclass
class Names:
    """The policy service's DNS in these tests: each name answers its answers in turn."""

    answers: dict[str, list[str]] = field(default_factory=dict)

    async def resolve(self, host: str, port: int) -> list[Address]:
        if host not in self.answers:
            raise OSError(f"{host}: no such name")
        queue = self.answers[host]
        return [ipaddress.ip_address(queue.pop(0) if len(queue) > 1 else queue[0])]


@dataclass
class Policy:
    app: PolicyApp
    stub: policy_service_pb2_grpc.PolicyServiceStub
    names: Names
    stopped: bool = False

    async def stop(self) -> None:
        self.stopped = True
        await self.app.stop()

    async def allow(self, name: str, **rules: object) -> policy_pb2.Policy:
        response = await self.stub.CreatePolicy(
            pb.CreatePolicyRequest(
                request_id=name,
                policy=policy_pb2.Policy(display_name=name, rules=policy_pb2.PolicyRules(**rules)),  # type: ignore[arg-type]
            ),
            metadata=as_tenant(TENANT),
        )
        return response.policy


@pytest.fixture
async def start_policy(
    database_url: str, nats_url: str
) -> AsyncIterator[Callable[[], asyncio.Future[Policy]]]:
    settings = PolicySettings(database_url=database_url, nats_url=nats_url, port=0, metrics_port=0)
    await asyncio.to_thread(migrate, settings)
    started: list[tuple[Policy, object]] = []
    names = Names()

    async def start() -> Policy:
        app = PolicyApp(settings, resolve=names.resolve)
        await app.start()
        ch = channel(app.port)
        made = Policy(app, policy_service_pb2_grpc.PolicyServiceStub(ch), names)
        started.append((made, ch))
        return made

    yield start  # type: ignore[misc]
    for made, ch in started:
        await ch.close()  # type: ignore[attr-defined]
        if not made.stopped:
            await made.app.stop()


@pytest.fixture
async def policy(start_policy) -> Policy:  # type: ignore[no-untyped-def]
    p: Policy = await start_policy()
    await p.allow("site", allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"])
    return p


@pytest.fixture
async def make_engine(
    nats_url: str,
) -> AsyncIterator[Callable[[PolicyApp], asyncio.Future[HttpEngine]]]:
    made: list[tuple[HttpEngine, PolicyClient]] = []

    async def make(app: PolicyApp) -> HttpEngine:
        client = PolicyClient(
            f"127.0.0.1:{app.port}", 2.0, Settings(nats_url=nats_url, port=0, metrics_port=0)
        )
        engine = HttpEngine(concurrency=8, user_agent=USER_AGENT, guard=Guard(client))
        await engine.start()
        made.append((engine, client))
        return engine

    yield make  # type: ignore[misc]
    for engine, client in made:
        await engine.close()
        await client.close()


def get(url: str, name: str = "") -> js.Step:
    return js.Step(name=name, request=js.RequestStep(url=url))


def job(*steps: js.Step) -> js.JobSpec:
    return js.JobSpec(engine=js.ENGINE_HTTP, steps=steps)


async def test_a_redirect_to_a_refused_host_is_refused_at_the_hop(  # type: ignore[no-untyped-def]
    policy: Policy, make_engine, servers
) -> None:
    site, canary = servers
    engine = await make_engine(policy.app)
    outcome = await engine.run(
        job(get(f"{site.url}/redirect-chain")),
        tenant=TENANT,
        job_id="3f2b8c1d-5e6a-4b7c-9d8e-0f1a2b3c4d5e",
    )
    assert outcome.failure is not None
    assert outcome.failure.code == r.POLICY_DENIED
    assert not outcome.failure.retryable
    assert f"{canary.url}/secret" in outcome.failure.message
    assert "DOMAIN_NOT_ALLOWED" in outcome.failure.message
    assert canary.hits == []
    assert site.hits == ["/robots.txt", "/redirect-chain", "/hop"]
    hops = outcome.result.requests
    assert [h.url for h in hops] == [
        f"{site.url}/redirect-chain",
        f"{site.url}/hop",
        f"{canary.url}/secret",
    ]
    assert [(h.sent, h.address, h.http_status) for h in hops] == [
        (True, "127.0.0.1", 302),
        (True, "127.0.0.1", 302),
        (False, "", 0),
    ]
    assert [x.code for x in hops[2].reasons] == ["DOMAIN_NOT_ALLOWED"]
    assert hops[2].decision_id


async def test_a_url_templated_from_extracted_data_is_checked_at_run_time(  # type: ignore[no-untyped-def]
    policy: Policy, make_engine, servers
) -> None:
    site, canary = servers
    engine = await make_engine(policy.app)
    spec = job(
        get(f"{site.url}/link"),
        js.Step(name="g", extract=js.ExtractStep(selector="#g", attribute="href")),
        get("http://{{ steps.g }}"),
    )
    outcome = await engine.run(spec, tenant=TENANT)
    assert outcome.failure is not None
    assert outcome.failure.code == r.POLICY_DENIED
    assert f"http://{canary.host}:{canary.port}/secret" in outcome.failure.message
    assert [s.status for s in outcome.result.steps] == [SUCCEEDED, SUCCEEDED, FAILED]
    assert canary.hits == []


async def test_a_name_is_sent_to_the_address_checked_not_to_a_later_answer(  # type: ignore[no-untyped-def]
    policy: Policy, make_engine, servers
) -> None:
    site, canary = servers
    # The first lookup answers the allowed site, every later one the canary.
    policy.names.answers["rebind.test"] = ["127.0.0.1", "127.0.0.2"]
    await policy.allow("rebind", allowed_domains=["rebind.test"])
    engine = await make_engine(policy.app)
    url = f"http://rebind.test:{site.port}/page"
    outcome = await engine.run(job(get(url), get(url)), tenant=TENANT)
    # The executor itself cannot resolve rebind.test: the first request reached the site
    # only because it went to the address the policy checked.
    assert site.hits == ["/robots.txt", "/page"]
    assert outcome.result.requests[0].address == "127.0.0.1"
    assert outcome.failure is not None
    assert outcome.failure.code == r.POLICY_DENIED
    assert "PRIVATE_NETWORK" in outcome.failure.message
    assert canary.hits == []


async def test_a_name_that_resolves_to_a_refused_address_is_refused(  # type: ignore[no-untyped-def]
    policy: Policy, make_engine, servers
) -> None:
    _site, canary = servers
    policy.names.answers["canary.test"] = ["127.0.0.2"]
    await policy.allow("canary", allowed_domains=["canary.test"])
    engine = await make_engine(policy.app)
    outcome = await engine.run(job(get(f"http://canary.test:{canary.port}/")), tenant=TENANT)
    assert outcome.failure is not None
    assert outcome.failure.code == r.POLICY_DENIED
    assert "PRIVATE_NETWORK" in outcome.failure.message
    assert canary.hits == []


async def test_policy_down_mid_job_sends_nothing_more_and_fails_retryable(  # type: ignore[no-untyped-def]
    policy: Policy, make_engine, servers
) -> None:
    site, _ = servers
    engine = await make_engine(policy.app)
    run = asyncio.create_task(
        engine.run(job(get(f"{site.url}/slow"), get(f"{site.url}/after")), tenant=TENANT)
    )
    async with asyncio.timeout(10):
        await site.slow_started.wait()
    await policy.stop()
    site.release.set()
    outcome = await run
    assert outcome.failure is not None
    assert outcome.failure.code == r.POLICY_UNAVAILABLE
    assert outcome.failure.retryable
    assert "/after" not in site.hits


async def test_a_policy_deleted_before_the_run_refuses_every_request(  # type: ignore[no-untyped-def]
    start_policy, make_engine, servers
) -> None:
    site, _ = servers
    policy: Policy = await start_policy()
    created = await policy.allow(
        "site", allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"]
    )
    await policy.stub.DeletePolicy(
        pb.DeletePolicyRequest(policy_id=created.policy_id), metadata=as_tenant(TENANT)
    )
    engine = await make_engine(policy.app)
    outcome = await engine.run(job(get(f"{site.url}/")), tenant=TENANT)
    assert outcome.failure is not None
    assert outcome.failure.code == r.POLICY_DENIED
    assert site.hits == []


async def test_rate_and_concurrency_hold_across_policy_processes_and_engines(  # type: ignore[no-untyped-def]
    start_policy, make_engine, servers
) -> None:
    site, _ = servers
    one: Policy = await start_policy()
    two: Policy = await start_policy()
    rule = policy_pb2.DomainRule(
        domain="127.0.0.1", requests_per_second=5, burst=5, max_concurrency=2
    )
    await one.allow(
        "limited",
        allowed_domains=["127.0.0.1"],
        allowed_networks=["127.0.0.1/32"],
        domain_rules=[rule],
    )
    engines = [await make_engine(p.app) for p in (one, two, one)]
    started = time.monotonic()
    spec = job(get(f"{site.url}/busy"))
    spec.attempt_timeout.FromSeconds(30)
    runs = [engines[i % 3].run(spec, tenant=TENANT) for i in range(15)]
    outcomes = await asyncio.gather(*runs)
    elapsed = time.monotonic() - started
    assert all(o.failure is None for o in outcomes), [o.failure for o in outcomes]
    sent = [h for h in site.hits if h == "/busy"]
    assert len(sent) == 15
    assert site.most_at_once <= 2
    # 15 requests from a bucket of 5 refilled at 5/s take at least 2 s.
    assert elapsed >= 1.9


async def test_tenants_never_share_a_connection(  # type: ignore[no-untyped-def]
    policy: Policy, make_engine, servers
) -> None:
    site, _ = servers
    response = await policy.stub.CreatePolicy(
        pb.CreatePolicyRequest(
            request_id="site",
            policy=policy_pb2.Policy(
                display_name="site",
                rules=policy_pb2.PolicyRules(
                    allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"]
                ),
            ),
        ),
        metadata=as_tenant("globex"),
    )
    assert response.policy.tenant_id == "globex"
    engine = await make_engine(policy.app)
    spec = job(get(f"{site.url}/a"))
    for tenant in (TENANT, TENANT, "globex", "globex", TENANT):
        outcome = await engine.run(spec, tenant=tenant)
        assert outcome.failure is None
    jobs = [port for path, port in zip(site.hits, site.peers, strict=True) if path == "/a"]
    # One kept-alive connection per tenant, reused by that tenant only.
    assert jobs[0] == jobs[1] == jobs[4]
    assert jobs[2] == jobs[3]
    assert jobs[0] != jobs[2]
