"""A job's steps and requests are spans in its one trace, in either engine: real Chromium,
the real policy service, a local site, spans kept in memory. A refused request's span says
why by code and the policy's reasons, never by the URL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import worker_service_pb2_grpc
from accord_executor.app import App
from accord_executor.config import Settings
from accord_executor.engines.guard import Guard
from accord_executor.engines.http import HttpEngine
from accord_executor.engines.spans import request_span
from accord_kit import tracing
from accord_kit.policy import PolicyClient
from accord_policy.app import App as PolicyApp

from .browser_site import Sites, sites_fixture  # noqa: F401 - the fixture
from .test_worker import FakeOrchestrator, eventually

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = int(PARENT.split("-")[1], 16)
PERMIT = "accord.policy.v1.PolicyService/AcquirePermit"


@pytest.fixture
async def traced_worker(
    traced: InMemorySpanExporter,
    executor_settings: Callable[..., Settings],
    chromium_path: str,
    tmp_path: Path,
) -> AsyncIterator[FakeOrchestrator]:
    """An executor started with tracing on, working for an in-test orchestrator."""
    fake = FakeOrchestrator()
    server = grpc.aio.server()
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = App(
        executor_settings(
            port, browser_executable=chromium_path, artifact_dir=str(tmp_path / "artifacts")
        )
    )
    await app.start()
    yield fake
    await app.stop()
    await server.stop(None)


async def test_a_browser_jobs_steps_and_requests_are_spans_in_its_trace(
    traced: InMemorySpanExporter, traced_worker: FakeOrchestrator, sites: Sites
) -> None:
    spec = js.JobSpec(
        engine=js.ENGINE_BROWSER,
        steps=[
            js.Step(request=js.RequestStep(url=f"{sites.url}/steps")),  # fetches /api
            js.Step(wait_for=js.WaitForStep(network_idle=True)),
            # Loads the canary's pixel, fetches it over HTTP and HTTPS and opens a WebSocket
            # to it: the policy refuses every one.
            js.Step(request=js.RequestStep(url=f"{sites.url}/leaky")),
            js.Step(wait_for=js.WaitForStep(network_idle=True)),
            js.Step(name="status", extract=js.ExtractStep(selector="#status")),
        ],
    )
    traced_worker.hand_out(spec, traceparent=PARENT)
    await traced_worker.until(lambda: len(traced_worker.completed) == 1)
    assert traced_worker.completed[0][1].result.outputs["status"] == "blocked"

    def finished() -> list[ReadableSpan]:
        return [s for s in traced.get_finished_spans() if s.context.trace_id == TRACE_ID]

    await eventually(lambda: any(s.name == "job.execute" for s in finished()))
    trace = finished()
    by_id = {s.context.span_id: s for s in trace}

    def parent(s: ReadableSpan) -> ReadableSpan | None:
        return by_id.get(s.parent.span_id) if s.parent is not None else None

    execute = next(s for s in trace if s.name == "job.execute")
    steps = sorted((s for s in trace if s.name.startswith("step.")), key=_index)
    assert [(s.name, _index(s)) for s in steps] == [
        ("step.request", 0),
        ("step.wait_for", 1),
        ("step.request", 2),
        ("step.wait_for", 3),
        ("step.extract", 4),
    ]
    assert all(parent(s) is execute for s in steps)

    # Every request span sits in the step that made it, with bounded attributes only.
    requests = [s for s in trace if s.name == "http.request"]
    for s in requests:
        assert parent(s) in steps, s.attributes
        assert set(s.attributes or {}) <= {
            "http.request.method",
            "server.address",
            "server.port",
            "http.response.status_code",
            "accord.policy.reasons",
        }
        assert not any("/" in str(v) for v in (s.attributes or {}).values()), s.attributes
    site_port = int(sites.url.rsplit(":", 1)[1])
    # Only the site answered anything. (A request still awaiting its check when the job
    # ended has neither an answer nor a refusal: its span ends unset.)
    answered = [s for s in requests if "http.response.status_code" in (s.attributes or {})]
    assert {(s.attributes or {})["server.address"] for s in answered} == {"127.0.0.1"}
    assert all(s.status.status_code is StatusCode.UNSET for s in answered)
    # The two pages and the fetch of /api, each answered 200 (Chromium may add a favicon).
    ok = [
        s
        for s in answered
        if (s.attributes or {})["http.response.status_code"] == 200
        and (s.attributes or {})["server.port"] == site_port
    ]
    assert len(ok) >= 3, [s.attributes for s in answered]
    assert {_index(parent(s)) for s in ok} >= {0, 2}  # type: ignore[arg-type]

    # Refused requests are failed spans that say why. (Chromium's own background requests
    # to outside hosts go through the job's proxy too, and are refused like the canary's.)
    refused = [s for s in requests if s.status.status_code is StatusCode.ERROR]
    for s in refused:
        assert (s.status.description or "").startswith("POLICY_DENIED: "), s.status
        assert (s.attributes or {})["accord.policy.reasons"]
    # The canary's four (pixel, fetch, HTTPS fetch, WebSocket CONNECT), in the step of the
    # page that made them.
    canary = [s for s in refused if (s.attributes or {})["server.address"] == "127.0.0.2"]
    assert {_index(parent(s)) for s in canary} <= {2, 3}  # type: ignore[arg-type]
    methods = sorted((s.attributes or {})["http.request.method"] for s in canary)
    assert methods == ["CONNECT", "GET", "GET", "GET"], [s.attributes for s in refused]

    # The policy checks each request made are calls inside its span.
    checks = [s for s in trace if parent(s) in requests]
    assert {s.name for s in checks} >= {PERMIT, "accord.policy.v1.PolicyService/CheckUrl"}
    assert sites.canary_hits == []


async def test_an_http_jobs_refused_hop_is_a_failed_span_that_names_no_url(
    traced: InMemorySpanExporter, policy_app: PolicyApp, nats_url: str, sites: Sites
) -> None:
    client = PolicyClient(
        f"127.0.0.1:{policy_app.port}", 2.0, Settings(nats_url=nats_url, port=0, metrics_port=0)
    )
    engine = HttpEngine(concurrency=2, user_agent="Accord/0.1", guard=Guard(client))
    await engine.start()
    try:
        go = js.Step(request=js.RequestStep(url=f"{sites.url}/to-canary"))
        spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[go])
        with tracing.span("job.execute", parent=PARENT):
            outcome = await engine.run(spec, tenant="acme", job_id=str(uuid.uuid4()))
    finally:
        await engine.close()
    assert outcome.failure is not None
    spans = [s for s in traced.get_finished_spans() if s.context.trace_id == TRACE_ID]
    hops = [s for s in spans if s.name == "http.request"]
    assert len(hops) == 2, (outcome.failure.message, [(s.attributes, s.status) for s in hops])
    site, canary = sorted(hops, key=lambda s: str((s.attributes or {})["server.address"]))
    assert (site.attributes or {})["http.response.status_code"] == 302
    assert site.status.status_code is StatusCode.UNSET
    assert canary.status.status_code is StatusCode.ERROR
    assert (canary.status.description or "").startswith("POLICY_DENIED: "), canary.status
    assert (canary.attributes or {})["accord.policy.reasons"]
    said = f"{canary.status.description} {[e.attributes for e in canary.events]}"
    assert "landing" not in said
    assert sites.canary_hits == []


def test_request_spans_cost_nothing_while_tracing_is_off() -> None:
    assert not tracing.enabled()
    assert request_span("GET", "http://127.0.0.1/?q=1") is tracing.span("anything")


def _index(s: ReadableSpan | None) -> int:
    assert s is not None
    return int((s.attributes or {})["index"])  # type: ignore[arg-type]
