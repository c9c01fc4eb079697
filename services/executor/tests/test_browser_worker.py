"""Queued browser jobs through the work loop: leased, run in Chromium, reported; cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import nats
import pytest
from google.protobuf import json_format

from accord.common.v1 import job_spec_pb2 as js
from accord.events.v1 import job_events_pb2
from accord.orchestrator.v1 import job_pb2, worker_service_pb2_grpc
from accord_executor.app import App
from accord_executor.config import Settings
from accord_kit import events

from .browser_site import Sites, sites_fixture  # noqa: F401 - the fixture
from .test_worker import WAIT, FakeOrchestrator, eventually


@pytest.fixture
async def fake(
    executor_settings: Callable[..., Settings], chromium_path: str, tmp_path: Path
) -> AsyncIterator[tuple[FakeOrchestrator, App]]:
    fake = FakeOrchestrator()
    server = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = App(
        executor_settings(
            port,
            browser_executable=chromium_path,
            artifact_dir=str(tmp_path / "artifacts"),
            lease_seconds=5,
        )
    )
    await app.start()
    yield fake, app
    await app.stop()
    await server.stop(None)


def browser(url: str) -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_BROWSER,
        steps=[
            js.Step(request=js.RequestStep(url=url)),
            js.Step(name="title", extract=js.ExtractStep(selector="title")),
        ],
    )


async def test_a_queued_browser_job_runs_and_a_cancelled_one_stops_at_once(  # type: ignore[no-untyped-def]
    fake, sites: Sites, nats_url: str
) -> None:
    orchestrator, app = fake
    orchestrator.hand_out(browser(f"{sites.url}/form"), tenant="acme")
    await orchestrator.until(lambda: len(orchestrator.completed) == 1)
    tenant, completion = orchestrator.completed[0]
    assert tenant == "acme"
    assert json_format.MessageToDict(completion.result.outputs) == {"title": "Search"}
    assert js.ENGINE_BROWSER in orchestrator.polls[-1].engines

    task = orchestrator.hand_out(browser(f"{sites.url}/slow"))
    await asyncio.wait_for(sites.slow_started.wait(), WAIT)
    pool = app.pools.get(js.ENGINE_BROWSER)
    assert pool is not None
    assert pool.in_flight == 1
    nc = await nats.connect(nats_url)
    try:
        change = job_pb2.JobStateChange(
            attempt=task.lease.attempt, state=job_pb2.JOB_STATE_CANCELLED
        )
        await nc.publish(
            "accord.orchestrator.v1.job.cancelled",
            events.envelope(
                producer="orchestrator",
                aggregate="job",
                event="cancelled",
                aggregate_id=task.lease.job_id,
                tenant_id="acme",
                payload=job_events_pb2.JobStateChanged(job_id=task.lease.job_id, change=change),
            ).SerializeToString(),
        )
        # Stopped within a second of the cancellation, not at the end of the slow page.
        await eventually(lambda: pool.in_flight == 0, timeout=1.0)
    finally:
        await nc.close()
    assert len(orchestrator.completed) == 1
    assert orchestrator.failed == []
