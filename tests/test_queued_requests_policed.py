"""A queued job is policed request by request, not only at admission: a redirect from an
allowed host to one no policy allows is refused at the hop, and the refused host (a canary
on 127.0.0.2, while the tenant's policy allows only 127.0.0.1) never sees a request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import job_pb2, job_service_pb2_grpc
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord_kit.net import free_port
from accord_kit.testing import as_tenant, channel

MD = as_tenant("acme")
TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_DEAD_LETTER, job_pb2.JOB_STATE_FAILED}


async def serve(app: web.Application, host: str) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port(host)
    await web.TCPSite(runner, host, port).start()
    return runner, port


@pytest.fixture
async def redirect_to_canary() -> AsyncIterator[tuple[str, list[str]]]:
    """An allowed site on 127.0.0.1 whose /go redirects to a canary on 127.0.0.2."""
    canary_hits: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        canary_hits.append(request.path)
        return web.Response(text="secret")

    canary = web.Application()
    canary.router.add_route("*", "/{tail:.*}", secret)
    canary_runner, canary_port = await serve(canary, "127.0.0.2")

    async def go(_: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.2:{canary_port}/secret")

    site = web.Application()
    site.router.add_get("/go", go)
    site_runner, site_port = await serve(site, "127.0.0.1")
    yield f"http://127.0.0.1:{site_port}/go", canary_hits
    await site_runner.cleanup()
    await canary_runner.cleanup()


async def test_a_redirect_to_a_refused_host_is_refused_at_the_hop(  # type: ignore[no-untyped-def]
    cluster: int, redirect_to_canary
) -> None:
    url, canary_hits = redirect_to_canary
    spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url=url))])
    async with channel(cluster) as ch:
        jobs = job_service_pb2_grpc.JobServiceStub(ch)
        created = await jobs.CreateJob(
            pb.CreateJobRequest(request_id=uuid.uuid4().hex, spec=spec), metadata=MD
        )
        assert created.job.state == job_pb2.JOB_STATE_QUEUED  # admission saw only 127.0.0.1
        deadline = asyncio.get_running_loop().time() + 30
        while (
            job := (await jobs.GetJob(pb.GetJobRequest(job_id=created.job.job_id), metadata=MD)).job
        ).state not in TERMINAL:
            assert asyncio.get_running_loop().time() < deadline, job
            await asyncio.sleep(0.1)
    assert job.state == job_pb2.JOB_STATE_DEAD_LETTER  # a refusal is not worth a retry
    assert job.attempts[-1].error_code == "POLICY_DENIED"
    assert "127.0.0.2" in job.status_message
    assert canary_hits == []
