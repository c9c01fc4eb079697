"""CheckUrl, AcquirePermit and ReleasePermit against real servers, Postgres and NATS.

Every host here is loopback: the site the policy fetches robots.txt from listens on
127.0.0.1, and names resolve through a resolver the test controls, to loopback addresses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import nats
import pytest
from aiohttp import web
from google.protobuf import duration_pb2
from nats.aio.msg import Msg

from accord.common.v1 import decision_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.events.v1 import envelope_pb2, policy_events_pb2
from accord.policy.v1 import policy_pb2, policy_service_pb2_grpc
from accord.policy.v1 import policy_service_pb2 as pb
from accord_kit.testing import as_tenant, channel, field_violations
from accord_policy.app import App, migrate
from accord_policy.config import Settings
from accord_policy.domain.addresses import Address

ALLOW = decision_pb2.DECISION_OUTCOME_ALLOW
DENY = decision_pb2.DECISION_OUTCOME_DENY
ACME = as_tenant("acme")
HTTP = js.ENGINE_HTTP
Stub = policy_service_pb2_grpc.PolicyServiceStub


@dataclass
class Names:
    """The test's DNS: each name answers its list of answers in turn, the last one forever."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> list[Address]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"{host}: no such name here")
        queue = self.answers[host]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return [ipaddress.ip_address(x) for x in answer]


@dataclass
class Site:
    url: str = ""
    port: int = 0
    robots: str = "User-agent: *\nDisallow: /private\n"
    robots_status: int = 200
    robots_fetches: int = 0


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    running = Site()

    async def robots(request: web.Request) -> web.Response:
        running.robots_fetches += 1
        return web.Response(status=running.robots_status, text=running.robots)

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    running.port = runner.addresses[0][1]
    running.url = f"http://127.0.0.1:{running.port}"
    yield running
    await runner.cleanup()


@pytest.fixture
def names() -> Names:
    return Names()


@pytest.fixture
async def start_policy(
    database_url: str, nats_url: str, names: Names
) -> AsyncIterator[Callable[[], asyncio.Future[tuple[App, Stub]]]]:
    """Starts policy processes (in this process) on one database, sharing its state."""
    settings = Settings(database_url=database_url, nats_url=nats_url, port=0, metrics_port=0)
    await asyncio.to_thread(migrate, settings)
    apps: list[App] = []
    channels: list[grpc.aio.Channel] = []

    async def start() -> tuple[App, Stub]:
        app = App(settings, resolve=names.resolve)
        await app.start()
        apps.append(app)
        ch = channel(app.port)
        channels.append(ch)
        return app, Stub(ch)

    yield start  # type: ignore[misc]
    for ch in channels:
        await ch.close()
    for app in apps:
        await app.stop()


@pytest.fixture
async def policy(start_policy) -> Stub:  # type: ignore[no-untyped-def]
    return (await start_policy())[1]


async def create(stub: Stub, name: str, **rules: object) -> policy_pb2.Policy:
    response = await stub.CreatePolicy(
        pb.CreatePolicyRequest(
            request_id=f"req-{name}",
            policy=policy_pb2.Policy(display_name=name, rules=policy_pb2.PolicyRules(**rules)),  # type: ignore[arg-type]
        ),
        metadata=ACME,
    )
    return response.policy


def internal_limits(domain: str, **limits: object) -> dict[str, object]:
    """Rules for the loopback site, with robots.txt skipped for internal jobs."""
    return {
        "allowed_domains": [domain],
        "allowed_networks": ["127.0.0.1/32"],
        "max_authorization_mode": js.AUTHORIZATION_MODE_INTERNAL,
        "domain_rules": [policy_pb2.DomainRule(domain=domain, ignore_robots_txt=True, **limits)],  # type: ignore[arg-type]
    }


async def check(stub: Stub, url: str, mode: int = 0) -> pb.CheckUrlResponse:
    request = pb.CheckUrlRequest(url=url, engine=HTTP, authorization_mode=mode)  # type: ignore[arg-type]
    response: pb.CheckUrlResponse = await stub.CheckUrl(request, metadata=ACME)
    return response


async def acquire(stub: Stub, url: str, **fields: object) -> pb.AcquirePermitResponse:
    fields.setdefault("authorization_mode", js.AUTHORIZATION_MODE_INTERNAL)
    request = pb.AcquirePermitRequest(url=url, engine=HTTP, **fields)  # type: ignore[arg-type]
    response: pb.AcquirePermitResponse = await stub.AcquirePermit(request, metadata=ACME)
    return response


def codes(decision: decision_pb2.PolicyDecision) -> list[str]:
    return [r.code for r in decision.reasons]


async def test_a_name_resolving_to_a_refused_loopback_address_is_refused(
    policy: Stub, names: Names
) -> None:
    names.answers["canary.test"] = [["127.0.0.2"]]
    await create(policy, "web", allowed_domains=["canary.test"], allowed_networks=["127.0.0.1/32"])
    checked = await check(policy, "http://canary.test:8080/")
    assert checked.decision.outcome == DENY
    assert codes(checked.decision) == ["PRIVATE_NETWORK"]
    assert "127.0.0.2" in checked.decision.reasons[0].message
    assert list(checked.addresses) == []


async def test_the_checked_address_is_the_one_returned_when_dns_changes(
    policy: Stub, names: Names, site: Site
) -> None:
    # First answer allowed, the second a refused address: the permit names the first, and
    # the second lookup is a new decision that refuses it.
    names.answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    await create(policy, "web", **internal_limits("rebind.test"))
    first = await acquire(policy, f"http://rebind.test:{site.port}/")
    assert first.granted
    assert first.address == "127.0.0.1"
    second = await acquire(policy, f"http://rebind.test:{site.port}/")
    assert not second.granted
    assert second.address == ""
    assert codes(second.decision) == ["PRIVATE_NETWORK"]


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.0.0.1.",
        "0",
        "127.000.000.001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "localhost",
    ],
)
async def test_every_spelling_of_loopback_is_refused_at_check_url(policy: Stub, host: str) -> None:
    await create(policy, "all", allowed_domains=["*"])
    checked = await check(policy, f"http://{host}:9/")
    assert checked.decision.outcome == DENY
    assert codes(checked.decision) == ["PRIVATE_NETWORK"]


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/", "http://127.0.0.1:99999/", "http://[::1", "http://[::1]x/", "http:///"],
)
async def test_unfetchable_urls_are_a_deny_not_an_error(policy: Stub, url: str) -> None:
    await create(policy, "all", allowed_domains=["*"], allowed_networks=["127.0.0.0/8"])
    checked = await check(policy, url)
    assert checked.decision.outcome == DENY
    assert codes(checked.decision) == ["INVALID_URL"]
    permit = await acquire(policy, url)
    assert not permit.granted
    assert codes(permit.decision) == ["INVALID_URL"]


async def test_a_deleted_policy_refuses_the_next_request(policy: Stub, site: Site) -> None:
    created = await create(policy, "web", **internal_limits("127.0.0.1"))
    public = js.AUTHORIZATION_MODE_PUBLIC
    assert (await acquire(policy, f"{site.url}/a", authorization_mode=public)).granted
    await policy.DeletePolicy(pb.DeletePolicyRequest(policy_id=created.policy_id), metadata=ACME)
    refused = await acquire(policy, f"{site.url}/a", authorization_mode=public)
    assert not refused.granted
    assert codes(refused.decision) == ["DOMAIN_NOT_ALLOWED"]


async def test_the_token_bucket_grants_a_burst_then_says_when(policy: Stub, site: Site) -> None:
    await create(policy, "web", **internal_limits("127.0.0.1", requests_per_second=2, burst=3))
    granted = [(await acquire(policy, f"{site.url}/")).granted for _ in range(3)]
    assert granted == [True, True, True]
    refused = await acquire(policy, f"{site.url}/")
    assert not refused.granted
    assert refused.decision.outcome == ALLOW  # allowed, only not yet
    assert 0 < refused.retry_after.ToTimedelta().total_seconds() <= 0.5
    waited = await acquire(policy, f"{site.url}/", wait=duration_pb2.Duration(seconds=2))
    assert waited.granted


async def test_concurrency_slots_come_back_on_release_or_at_lease_end(
    policy: Stub, site: Site
) -> None:
    await create(policy, "web", **internal_limits("127.0.0.1", max_concurrency=1))
    held = await acquire(policy, f"{site.url}/", lease=duration_pb2.Duration(seconds=1))
    assert held.granted
    assert held.permit_id
    assert held.expire_time.seconds > 0
    assert not (await acquire(policy, f"{site.url}/")).granted
    await policy.ReleasePermit(pb.ReleasePermitRequest(permit_id=held.permit_id), metadata=ACME)
    again = await acquire(policy, f"{site.url}/", lease=duration_pb2.Duration(seconds=1))
    assert again.granted
    # Never released: the slot is free again once the lease has run out, not before.
    started = time.monotonic()
    late = await acquire(policy, f"{site.url}/", wait=duration_pb2.Duration(seconds=5))
    assert late.granted
    assert time.monotonic() - started >= 0.5
    # Releasing twice, or a permit that lapsed, is not an error.
    for permit_id in (held.permit_id, again.permit_id):
        await policy.ReleasePermit(pb.ReleasePermitRequest(permit_id=permit_id), metadata=ACME)


async def test_two_policy_processes_share_one_bucket(start_policy, site: Site) -> None:  # type: ignore[no-untyped-def]
    (_, one), (_, two) = await start_policy(), await start_policy()
    await create(one, "web", **internal_limits("127.0.0.1", requests_per_second=0.5, burst=4))
    calls = [acquire(stub, f"{site.url}/") for stub in (one, two) * 6]
    granted = [r.granted for r in await asyncio.gather(*calls)]
    assert sum(granted) == 4


async def test_robots_txt_refuses_a_disallowed_path_for_public_jobs(
    policy: Stub, site: Site
) -> None:
    await create(policy, "web", **internal_limits("127.0.0.1"))
    public = js.AUTHORIZATION_MODE_PUBLIC
    refused = await acquire(policy, f"{site.url}/private/x", authorization_mode=public)
    assert not refused.granted
    assert codes(refused.decision) == ["ROBOTS_DISALLOWED"]
    assert (await acquire(policy, f"{site.url}/public", authorization_mode=public)).granted
    # The override counts for an internal job only.
    assert (await acquire(policy, f"{site.url}/private/x")).granted
    # Fetched once, then served from the cache inside its TTL.
    assert site.robots_fetches == 1


async def test_a_failing_robots_txt_blocks_the_origin(policy: Stub, site: Site) -> None:
    site.robots_status = 503
    await create(policy, "web", allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"])
    checked = await check(policy, f"{site.url}/anything")
    assert codes(checked.decision) == ["ROBOTS_UNAVAILABLE"]
    [reason] = checked.decision.reasons
    assert "could not be fetched (it answered HTTP 503)" in reason.message
    assert "the URL itself was not requested" in reason.message


async def test_a_missing_robots_txt_allows_everything(policy: Stub, site: Site) -> None:
    site.robots_status = 404
    await create(policy, "web", allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"])
    checked = await check(policy, f"{site.url}/private/x")
    assert checked.decision.outcome == ALLOW
    assert list(checked.addresses) == ["127.0.0.1"]


async def test_crawl_delay_lowers_the_rate(policy: Stub, site: Site) -> None:
    site.robots = "User-agent: Accord\nCrawl-delay: 30\nAllow: /\n"
    await create(policy, "web", allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"])
    public = js.AUTHORIZATION_MODE_PUBLIC
    assert (await acquire(policy, f"{site.url}/", authorization_mode=public)).granted
    second = await acquire(policy, f"{site.url}/", authorization_mode=public)
    assert not second.granted
    assert second.retry_after.ToTimedelta().total_seconds() > 20


def _d(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


@pytest.mark.parametrize(
    ("request_", "field_"),
    [
        (pb.AcquirePermitRequest(url="http://a.test/"), "engine"),
        (pb.AcquirePermitRequest(engine=HTTP), "url"),
        (pb.AcquirePermitRequest(url="http://a.test/" + "x" * 2048, engine=HTTP), "url"),
        (pb.AcquirePermitRequest(url="http://a.test/", engine=HTTP, job_id="j" * 65), "job_id"),
        (pb.AcquirePermitRequest(url="http://a.test/", engine=HTTP, wait=_d(61)), "wait"),
        (pb.AcquirePermitRequest(url="http://a.test/", engine=HTTP, lease=_d(0.5)), "lease"),
        (pb.AcquirePermitRequest(url="http://a.test/", engine=HTTP, lease=_d(601)), "lease"),
        (
            pb.AcquirePermitRequest(url="http://a.test/", engine=HTTP, authorization_mode=9),  # type: ignore[arg-type]
            "authorization_mode",
        ),
        (pb.ReleasePermitRequest(), "permit_id"),
        (pb.ReleasePermitRequest(permit_id="p" * 65), "permit_id"),
        (
            pb.CreatePolicyRequest(
                request_id="r",
                policy=policy_pb2.Policy(
                    display_name="n", rules=policy_pb2.PolicyRules(allowed_networks=["10.1.2.3/8"])
                ),
            ),
            "policy.rules.allowed_networks[0]",
        ),
        (
            pb.CreatePolicyRequest(
                request_id="r",
                policy=policy_pb2.Policy(
                    display_name="n", rules=policy_pb2.PolicyRules(allowed_networks=["loopback"])
                ),
            ),
            "policy.rules.allowed_networks[0]",
        ),
    ],
)
async def test_invalid_permit_and_network_fields(policy: Stub, request_, field_: str) -> None:  # type: ignore[no-untyped-def]
    method = getattr(policy, type(request_).__name__.removesuffix("Request"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await method(request_, metadata=ACME)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_ in field_violations(err.value)


async def test_a_denied_request_is_published_and_an_allowed_one_is_not(
    policy: Stub, site: Site, nats_url: str
) -> None:
    await create(policy, "web", **internal_limits("127.0.0.1"))
    nc = await nats.connect(nats_url)
    seen: asyncio.Queue[policy_events_pb2.DecisionRecorded] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        recorded = policy_events_pb2.DecisionRecorded()
        envelope_pb2.EventEnvelope.FromString(msg.data).payload.Unpack(recorded)
        seen.put_nowait(recorded)

    await nc.subscribe("accord.policy.v1.decision.recorded", cb=on_event)
    try:
        assert (
            await acquire(policy, f"{site.url}/ok", job_id="0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a")
        ).granted
        refused = await acquire(
            policy, "http://127.0.0.2:9/canary", job_id="9d1e2f3a-4b5c-4d6e-8f7a-1b2c3d4e5f60"
        )
        assert not refused.granted
        async with asyncio.timeout(10):
            event = await seen.get()
        # The allowed request published nothing: the first event is the deny.
        assert (event.job_id, event.url) == (
            "9d1e2f3a-4b5c-4d6e-8f7a-1b2c3d4e5f60",
            "http://127.0.0.2:9/canary",
        )
        assert event.decision.decision_id == refused.decision.decision_id
        assert [r.code for r in event.decision.reasons] == ["DOMAIN_NOT_ALLOWED"]
    finally:
        await nc.close()
