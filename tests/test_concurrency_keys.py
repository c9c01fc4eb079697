"""Concurrency keys across executors: three executors, one orchestrator, one policy service
(all real servers, in process) and a local site that counts the requests it holds at once.
A key limited to 2 never has more than 2 requests in flight, while jobs of other keys keep
flowing past it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import job_pb2, job_service_pb2_grpc
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord_kit.net import free_port
from accord_kit.testing import as_tenant, channel

MD = as_tenant("acme")
HOLD_SECONDS = 0.15


@dataclass
class Counter:
    """What the site saw: requests in flight per path, the peak, and the order they began."""

    in_flight: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)


@pytest.fixture
async def counting_site() -> AsyncIterator[tuple[str, Counter]]:
    seen = Counter()

    async def hold(request: web.Request) -> web.Response:
        path = request.match_info["name"]
        seen.started.append(path)
        seen.in_flight[path] = seen.in_flight.get(path, 0) + 1
        seen.peak[path] = max(seen.peak.get(path, 0), seen.in_flight[path])
        try:
            await asyncio.sleep(HOLD_SECONDS)  # the site's own work, not synchronisation
        finally:
            seen.in_flight[path] -= 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{name}", hold)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def fetch(url: str, key: str | None = None) -> js.JobSpec:
    spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url=url))])
    if key:
        spec.concurrency.CopyFrom(js.ConcurrencyLimit(key=key, max_running=2))
    return spec


async def test_a_key_limited_to_two_never_runs_three_across_executors(  # type: ignore[no-untyped-def]
    cluster: int, counting_site
) -> None:
    base, seen = counting_site
    specs = [fetch(f"{base}/capped", key="shop") for _ in range(8)]
    specs += [fetch(f"{base}/free") for _ in range(6)]
    async with channel(cluster) as ch:
        stub = job_service_pb2_grpc.JobServiceStub(ch)
        created = await stub.BatchCreateJobs(
            pb.BatchCreateJobsRequest(request_id=uuid.uuid4().hex, specs=specs), metadata=MD
        )
        ids = [j.job_id for j in created.jobs]
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            jobs = [(await stub.GetJob(pb.GetJobRequest(job_id=i), metadata=MD)).job for i in ids]
            if all(j.state == job_pb2.JOB_STATE_SUCCEEDED for j in jobs):
                break
            assert all(j.state not in (job_pb2.JOB_STATE_DEAD_LETTER,) for j in jobs)
            assert asyncio.get_running_loop().time() < deadline, [j.state for j in jobs]
            await asyncio.sleep(0.1)
    assert seen.started.count("capped") == 8
    assert seen.started.count("free") == 6
    assert seen.peak["capped"] == 2  # the cap was reached and never passed
    assert seen.peak["free"] > 2  # uncapped work ran side by side
    # The free jobs did not wait behind the capped ones: all began before the last capped.
    last_capped = max(i for i, name in enumerate(seen.started) if name == "capped")
    assert max(i for i, name in enumerate(seen.started) if name == "free") < last_capped
    workers = {j.attempts[0].worker_id for j in jobs}
    assert len(workers) >= 2  # more than one executor took part
