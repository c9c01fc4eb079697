"""Browser jobs through ExecutorService's generated stubs: RunJob, then GetArtifact.

The executor runs real Chromium behind its policing proxy; the policy service allows the
tenants 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.executor.v1 import executor_service_pb2 as pb
from accord.executor.v1 import executor_service_pb2_grpc
from accord_executor.app import App
from accord_executor.config import Settings
from accord_kit.testing import as_tenant, channel

from .browser_site import Sites, sites_fixture  # noqa: F401 - the fixture

SUCCEEDED = job_result_pb2.STEP_STATUS_SUCCEEDED


@pytest.fixture
async def browser_app(
    executor_settings: Callable[..., Settings],
    closed_port: int,
    chromium_path: str,
    tmp_path: Path,
) -> AsyncIterator[App]:
    app = App(
        executor_settings(
            closed_port,
            browser_executable=chromium_path,
            artifact_dir=str(tmp_path / "artifacts"),
        )
    )
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def stub(
    browser_app: App,
) -> AsyncIterator[executor_service_pb2_grpc.ExecutorServiceAsyncStub]:
    async with channel(browser_app.port) as ch:
        yield executor_service_pb2_grpc.ExecutorServiceStub(ch)


async def fetch(
    stub, artifact_id: str, tenant: str = "default"
) -> tuple[pb.GetArtifactResponse, bytes]:  # type: ignore[no-untyped-def]
    messages = [
        m
        async for m in stub.GetArtifact(
            pb.GetArtifactRequest(artifact_id=artifact_id), metadata=as_tenant(tenant)
        )
    ]
    return messages[0], b"".join(m.chunk for m in messages)


async def test_a_form_job_runs_and_its_screenshot_can_be_fetched(
    stub, browser_app: App, sites: Sites
) -> None:  # type: ignore[no-untyped-def]
    spec = js.JobSpec(
        engine=js.ENGINE_BROWSER,
        steps=[
            js.Step(request=js.RequestStep(url=f"{sites.url}/form")),
            js.Step(name="term", extract=js.ExtractStep(selector="title")),
            js.Step(fill=js.FillStep(selector="#q", value="{{ term }}")),
            js.Step(select=js.SelectStep(selector="#size", value="l")),
            js.Step(click=js.ClickStep(selector="#go")),
            js.Step(wait_for=js.WaitForStep(selector="#done")),
            js.Step(name="names", extract=js.ExtractStep(selector="#items li", all=True)),
            js.Step(
                name="prices",
                extract=js.ExtractStep(selector="#items li", attribute="data-price", all=True),
            ),
            js.Step(name="shot", screenshot=js.ScreenshotStep(full_page=True)),
        ],
        result_template={"names": "{{ names }}", "first": "{{ names.0 }}", "shot": "{{ shot }}"},
    )
    messages = [m async for m in stub.RunJob(pb.RunJobRequest(spec=spec))]
    steps = [m.step for m in messages if m.HasField("step")]
    assert [s.status for s in steps] == [SUCCEEDED] * 9
    result = messages[-1].result
    out = json_format.MessageToDict(result.outputs)
    assert out["names"] == ["Search 1 (l)", "Search 2 (l)", "Search 3 (l)"]
    assert out["first"] == "Search 1 (l)"
    assert sites.user_agents == ["Accord/0.1 (+https://accord.dev/bot)"]

    [ref] = result.artifacts
    assert out["shot"]["artifact_id"] == ref.artifact_id
    first, data = await fetch(stub, ref.artifact_id)
    assert first.artifact == ref
    assert hashlib.sha256(data).hexdigest() == ref.sha256 == ref.artifact_id
    assert len(data) == ref.size_bytes
    assert data.startswith(b"\x89PNG")
    # Tenant scoped: the same id is another tenant's NOT_FOUND.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(stub, ref.artifact_id, tenant="acme")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    # Pruned after the retention: gone, for its own tenant too.
    assert await browser_app.artifacts.prune(-1) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fetch(stub, ref.artifact_id)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_status_reports_the_browser_pool_beside_the_http_pool(stub, browser_app: App) -> None:  # type: ignore[no-untyped-def]
    status = await stub.GetExecutorStatus(pb.GetExecutorStatusRequest())
    pools = {p.engine: p for p in status.pools}
    assert pools[js.ENGINE_BROWSER].available
    assert pools[js.ENGINE_BROWSER].capacity == browser_app.settings.browser_concurrency
    assert pools[js.ENGINE_HTTP].capacity == browser_app.settings.concurrency
