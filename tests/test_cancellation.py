"""CancelJob reaches the executor running the job through its `job.cancelled` event: the
request in flight is dropped long before the next heartbeat (every 10 s here) could say so."""

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
# Well under the executors' heartbeat interval (a third of their 30 s lease).
PUSH_DEADLINE = 3.0


@pytest.fixture
async def hanging_site() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """A page that never answers; says when a request arrives and when it is dropped."""
    arrived, dropped = asyncio.Event(), asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        arrived.set()
        try:
            await asyncio.Event().wait()  # only the client going away ends it
        finally:
            dropped.set()
        return web.Response()

    app = web.Application()
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, handler_cancellation=True)  # a dropped client ends the handler
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hang", arrived, dropped
    await runner.cleanup()


async def test_a_cancelled_running_job_is_stopped_by_its_event(cluster: int, hanging_site) -> None:  # type: ignore[no-untyped-def]
    url, arrived, dropped = hanging_site
    spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url=url))])
    async with channel(cluster) as ch:
        jobs = job_service_pb2_grpc.JobServiceStub(ch)
        job = (
            await jobs.CreateJob(
                pb.CreateJobRequest(request_id=uuid.uuid4().hex, spec=spec), metadata=MD
            )
        ).job
        await asyncio.wait_for(arrived.wait(), 30)
        cancelled = await jobs.CancelJob(
            pb.CancelJobRequest(job_id=job.job_id, reason="stop now"), metadata=MD
        )
        assert cancelled.job.state == job_pb2.JOB_STATE_CANCELLED
        await asyncio.wait_for(dropped.wait(), PUSH_DEADLINE)
        final = (await jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=MD)).job
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert [a.outcome for a in final.attempts] == [job_pb2.ATTEMPT_OUTCOME_CANCELLED]
