"""Per-host limits hold across processes: two policy services, three executors, one site.

The site (127.0.0.1, the test's own loop) counts what reaches it: every arrival time and how
many requests it serves at once. Executors 0 and 2 ask policy 0, executor 1 asks policy 1;
the limits live in PostgreSQL, so all of them draw from one bucket and one cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.executor.v1 import executor_service_pb2 as epb
from accord.executor.v1 import executor_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2_grpc
from accord.policy.v1 import policy_service_pb2 as pb
from accord_kit.stack import Stack
from accord_kit.testing import channel
from tests.e2e.suite import service_env

pytestmark = pytest.mark.e2e

RATE, BURST, CAP = 5.0, 5, 2
# Server-side arrival times lag the grants by up to a scheduling delay of a loaded machine
# (two arrivals granted 0.2 s apart may land together); this much slack is allowed. A
# limiter that did not hold lets all 50 requests through in a burst, far past it.
SLACK_SECONDS = 0.3


@dataclass
class Site:
    port: int = 0
    arrivals: list[float] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0
    holds: int = 0
    both_held: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    counted = Site()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/robots.txt":
            return web.Response(status=404)  # the policy service's, not a job's request
        counted.arrivals.append(time.monotonic())
        counted.running += 1
        counted.most_at_once = max(counted.most_at_once, counted.running)
        try:
            if request.path == "/hold":
                counted.holds += 1
                if counted.holds == CAP:
                    counted.both_held.set()
                await counted.release.wait()
            else:
                await asyncio.sleep(0.1)
            return web.Response(text="<title>ok</title>", content_type="text/html")
        finally:
            counted.running -= 1

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    counted.port = runner.addresses[0][1]
    yield counted
    counted.release.set()
    await runner.cleanup()


@pytest.fixture
async def stack(database_url: str, nats_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    env = service_env(
        "info",
        ACCORD_DATABASE_URL=database_url,
        ACCORD_NATS_URL=nats_url,
        ACCORD_AUDIT_DURABLE_NAME=f"audit-{tmp_path.name}"[:60],
    )
    async with Stack(tmp_path, env=env, replicas={"policy": 2, "executor": 3}).running() as s:
        yield s


def _port(target: str) -> int:
    return int(target.rsplit(":", 1)[1])


def job(url: str, step_timeout: float = 0) -> js.JobSpec:
    spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url=url))])
    spec.attempt_timeout.FromSeconds(60)
    if step_timeout:
        spec.steps[0].timeout.FromMilliseconds(int(step_timeout * 1000))
    return spec


async def run_on(stack: Stack, replica: int, spec: js.JobSpec) -> job_result_pb2.JobResult:
    async with channel(_port(stack.target("executor", replica))) as ch:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(ch)
        messages = [m async for m in stub.RunJob(epb.RunJobRequest(spec=spec), timeout=90)]
    return messages[-1].result


def within_bucket(arrivals: list[float]) -> bool:
    """No interval holds more arrivals than the bucket allows: burst + rate x length."""
    times = sorted(arrivals)
    return all(
        j - i + 1 <= BURST + RATE * (times[j] - times[i] + SLACK_SECONDS)
        for i in range(len(times))
        for j in range(i, len(times))
    )


async def test_rate_and_cap_hold_across_processes_and_a_killed_executor_frees_its_slot(
    stack: Stack, site: Site
) -> None:
    rule = policy_pb2.DomainRule(
        domain="127.0.0.1", requests_per_second=RATE, burst=BURST, max_concurrency=CAP
    )
    rules = policy_pb2.PolicyRules(
        allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"], domain_rules=[rule]
    )
    async with channel(_port(stack.target("policy", 0))) as ch:
        await policy_service_pb2_grpc.PolicyServiceStub(ch).CreatePolicy(
            pb.CreatePolicyRequest(
                request_id="limits", policy=policy_pb2.Policy(display_name="limits", rules=rules)
            )
        )

    # Ten seconds' worth of the rate, asked all at once through three executors.
    started = time.monotonic()
    results = await asyncio.gather(
        *(run_on(stack, i % 3, job(f"{site.url}/busy")) for i in range(int(RATE * 10)))
    )
    assert all(not r.steps[0].error_message for r in results), [r.steps[0] for r in results]
    assert len(site.arrivals) == int(RATE * 10)
    assert site.most_at_once <= CAP
    assert within_bucket(site.arrivals)
    assert time.monotonic() - started >= (RATE * 10 - BURST) / RATE - SLACK_SECONDS

    # Two holds take both slots; executor 0's holder dies with its permit.
    lease = 3.0
    killed = asyncio.create_task(run_on(stack, 0, job(f"{site.url}/hold", step_timeout=lease)))
    kept = asyncio.create_task(run_on(stack, 1, job(f"{site.url}/hold", step_timeout=30)))
    async with asyncio.timeout(20):
        await site.both_held.wait()
    granted = min(site.arrivals[-2:])  # no later than the killed one's grant
    await asyncio.to_thread(stack.kill, "executor", 0)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the stream breaks with its process
        await killed
    before = len(site.arrivals)
    third = await run_on(stack, 2, job(f"{site.url}/after"))
    assert not third.steps[0].error_message
    arrived = site.arrivals[before]
    # The dead executor's slot stayed taken until its lease ran out (at most `lease` after
    # its step began), and came back then: the third request did not wait much longer.
    assert arrived - granted >= 1.0
    assert arrived - granted <= lease + 3.0
    site.release.set()
    await kept
