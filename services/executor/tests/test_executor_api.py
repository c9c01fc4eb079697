"""ExecutorService through generated stubs against a real server on port 0."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.executor.v1 import executor_service_pb2 as pb
from accord_executor.app import App
from accord_executor.engines.browser import find_browser
from accord_kit.testing import as_tenant, channel, unrunnable_specs

SUCCEEDED = job_result_pb2.STEP_STATUS_SUCCEEDED
FAILED = job_result_pb2.STEP_STATUS_FAILED
SKIPPED = job_result_pb2.STEP_STATUS_SKIPPED


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def run(stub, spec: js.JobSpec) -> list[pb.RunJobResponse]:  # type: ignore[no-untyped-def]
    return [m async for m in stub.RunJob(pb.RunJobRequest(spec=spec))]


def page_spec(url: str, *more: js.Step, **fields: object) -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_HTTP,
        steps=[
            js.Step(name="home", request=js.RequestStep(url=url)),
            js.Step(name="title", extract=js.ExtractStep(selector="title")),
            js.Step(
                name="links",
                extract=js.ExtractStep(selector="ul.links a", attribute="href", all=True),
            ),
            *more,
        ],
        **fields,  # type: ignore[arg-type]
    )


async def test_run_job_streams_each_step_then_the_result(executor, site) -> None:  # type: ignore[no-untyped-def]
    spec = page_spec(
        f"{site.url}/",
        result_template={"title": "{{ steps.title }}", "links": "{{ steps.links }}"},
    )
    messages = await run(executor, spec)
    assert [m.WhichOneof("event") for m in messages] == ["step", "step", "step", "result"]
    assert [m.step.index for m in messages[:3]] == [0, 1, 2]
    assert [m.step.status for m in messages[:3]] == [SUCCEEDED] * 3
    assert messages[0].step.http_status == 200
    assert messages[1].step.output.string_value == "Accord Test Site"
    result = messages[-1].result
    assert json_format.MessageToDict(result.outputs) == {
        "title": "Accord Test Site",
        "links": ["/about", "/jobs", "/status/404"],
    }
    assert list(result.steps) == [m.step for m in messages[:3]]


async def test_run_job_reports_a_failed_step_in_the_stream(executor, site) -> None:  # type: ignore[no-untyped-def]
    spec = page_spec(
        f"{site.url}/status/404",
        js.Step(assertion=js.AssertStep(status=200)),
        js.Step(name="after", extract=js.ExtractStep(selector="p")),
    )
    messages = await run(executor, spec)
    steps = [m.step for m in messages if m.WhichOneof("event") == "step"]
    assert [s.status for s in steps] == [SUCCEEDED, SUCCEEDED, SUCCEEDED, FAILED, SKIPPED]
    assert "expected HTTP status 200, got 404" in steps[3].error_message
    assert messages[-1].WhichOneof("event") == "result"
    assert json_format.MessageToDict(messages[-1].result.outputs)["home"]["status"] == 404


async def test_status_shows_both_pools(executor, executor_app: App, site) -> None:  # type: ignore[no-untyped-def]
    before = await executor.GetExecutorStatus(pb.GetExecutorStatusRequest())
    assert before.worker_id == "test-worker"
    assert not before.draining
    pools = {p.engine: p for p in before.pools}
    assert set(pools) == {js.ENGINE_HTTP, js.ENGINE_BROWSER}
    http, browser = pools[js.ENGINE_HTTP], pools[js.ENGINE_BROWSER]
    assert (http.available, http.capacity, http.in_flight) == (True, 4, 0)
    assert not browser.available
    assert "/nonexistent/chromium" in browser.unavailable_reason

    await run(executor, page_spec(f"{site.url}/"))
    after = await executor.GetExecutorStatus(pb.GetExecutorStatusRequest())
    http_after = next(p for p in after.pools if p.engine == js.ENGINE_HTTP)
    assert http_after.completed_total == http.completed_total + 1
    assert http_after.in_flight == 0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (js.JobSpec(engine=js.ENGINE_HTTP), "spec.steps"),
        (
            js.JobSpec(steps=[js.Step(request=js.RequestStep(url="https://example.com/"))]),
            "spec.engine",
        ),
        (
            js.JobSpec(
                engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url="ftp://x"))]
            ),
            "spec.steps[0].request.url",
        ),
        (js.JobSpec(engine=js.ENGINE_HTTP, steps=[js.Step()]), "spec.steps[0].action"),
        (
            js.JobSpec(
                engine=js.ENGINE_HTTP,
                steps=[js.Step(request=js.RequestStep(url="https://a.test/{{ ghost }}"))],
            ),
            "spec.steps[0].request.url",
        ),
        (
            js.JobSpec(
                engine=js.ENGINE_HTTP,
                steps=[js.Step(request=js.RequestStep(url="https://a.test/"))],
                result_template={"x": "{{ ghost }}"},
            ),
            "spec.result_template[x]",
        ),
    ],
)
async def test_run_job_rejects_invalid_specs(executor, spec: js.JobSpec, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(executor, spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(caught.value)


async def test_run_job_needs_a_spec(executor) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(executor, None)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec" in violations(caught.value)


async def test_run_job_on_an_unavailable_browser_fails_precondition(executor) -> None:  # type: ignore[no-untyped-def]
    spec = js.JobSpec(
        engine=js.ENGINE_BROWSER,
        steps=[js.Step(request=js.RequestStep(url="https://example.com/"))],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(executor, spec)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ENGINE_BROWSER" in (caught.value.details() or "")


async def test_result_template_that_cannot_render_fails_the_call(executor, site) -> None:  # type: ignore[no-untyped-def]
    spec = page_spec(f"{site.url}/", result_template={"x": "{{ home.nope }}"})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(executor, spec)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "result_template[x]" in (caught.value.details() or "")


async def test_get_artifact_refuses_unknown_and_empty_ids(executor) -> None:  # type: ignore[no-untyped-def]
    for artifact_id, code in (
        ("a1", grpc.StatusCode.NOT_FOUND),
        ("0" * 64, grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in executor.GetArtifact(pb.GetArtifactRequest(artifact_id=artifact_id)):
                pass
        assert caught.value.code() == code, artifact_id
    assert "artifact_id" in violations(caught.value)


async def test_run_job_refuses_browser_steps_in_an_http_spec(executor, site) -> None:  # type: ignore[no-untyped-def]
    spec = page_spec(
        f"{site.url}/",
        js.Step(click=js.ClickStep(selector="a")),
        js.Step(wait_for=js.WaitForStep(text="Welcome")),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(executor, spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert "click steps need the browser engine" in found["spec.steps[3].click"]
    assert "wait_for text steps" in found["spec.steps[4].wait_for"]
    assert site.hits == []  # refused before anything was sent


@pytest.mark.parametrize(("bad", "field"), unrunnable_specs("http://127.0.0.1:9/"))
async def test_run_job_refuses_a_spec_that_could_never_run(executor, site, bad, field) -> None:  # type: ignore[no-untyped-def]
    """The same check the orchestrator makes at submission, before anything is sent."""
    spec = js.JobSpec()
    spec.CopyFrom(bad)
    for step in spec.steps:
        if step.HasField("request"):
            step.request.url = f"{site.url}/"  # so that a request sent would show in the hits
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run(executor, spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(violations(caught.value)) == [f"spec.{field}"]
    assert site.hits == []


async def test_health_is_not_serving_without_the_orchestrator(executor_app: App) -> None:
    async with channel(executor_app.port) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        response = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert response.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_find_browser_prefers_the_configured_executable(tmp_path: Path) -> None:
    chrome = tmp_path / "chromium"
    chrome.write_text("#!/bin/sh\n")
    found = await find_browser(str(chrome))
    assert not found.found  # not executable yet
    os.chmod(chrome, chrome.stat().st_mode | stat.S_IXUSR)
    found = await find_browser(str(chrome))
    assert found.executable == str(chrome)


async def test_find_browser_reports_why_none_is_usable() -> None:
    probe = await find_browser(None)
    # Either Playwright's Chromium or the system's is installed, or the reason names both.
    if probe.found:
        assert probe.executable is not None
        assert os.access(probe.executable, os.X_OK)
    else:
        assert "/usr/bin/chromium" in probe.reason
        assert "playwright install chromium" in probe.reason


async def test_run_job_asks_the_callers_policy_first_and_a_deny_runs_nothing(  # type: ignore[no-untyped-def]
    executor, site
) -> None:
    # `initech` has no policy: default deny, and the site is never fetched.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in executor.RunJob(
            pb.RunJobRequest(spec=page_spec(f"{site.url}/")), metadata=as_tenant("initech")
        ):
            pass
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(info) for d in status.details)
    assert info.metadata["reasons"] == "DOMAIN_NOT_ALLOWED"
    assert info.metadata["decision_id"]
    assert site.hits == []
    # The same spec for `default`, whose policy allows the site, runs.
    assert (await run(executor, page_spec(f"{site.url}/")))[-1].WhichOneof("event") == "result"
    assert site.hits == ["/"]


async def test_run_job_fails_closed_when_policy_is_down(  # type: ignore[no-untyped-def]
    executor, site, policy_app
) -> None:
    await policy_app.stop()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await run(executor, page_spec(f"{site.url}/"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert site.hits == []
