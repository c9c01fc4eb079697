"""One trace per job: the four services, as real processes, export their spans over OTLP
(gRPC, and HTTP with protobuf bodies) to a collector this test runs in memory; a job's
admission, policy decision, lease, steps and requests, completion and audit appends all land
in the trace its admission began."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord_kit.net import free_port
from accord_kit.stack import Stack
from accord_kit.testing import eventually
from tests.e2e.suite import service_env
from tests.e2e.test_one_job import MD, allow_local_site
from tests.e2e.test_one_job import scrape as scrape_spec

pytestmark = pytest.mark.e2e
DECIDED = "accord.policy.v1.decision.recorded"
PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps every span it is sent: the gRPC TraceService, and
    `receive` for OTLP/HTTP's POST /v1/traces."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def Export(  # noqa: N802 - the generated servicer's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.keep(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    async def receive(self, request: web.Request) -> web.Response:
        if request.content_type != PROTOBUF:
            return web.Response(status=415, text=f"expected {PROTOBUF}")
        self.keep(trace_service_pb2.ExportTraceServiceRequest.FromString(await request.read()))
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=answer, content_type=PROTOBUF)

    def keep(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            resource.get("service.name", ""),
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in s.attributes},
                        )
                    )


Collected = tuple[Collector, dict[str, str]]
"""The collector, and the variables that point a service at it."""


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(params=["grpc", "http/protobuf"], ids=["grpc", "http"])
async def collector(request: pytest.FixtureRequest) -> AsyncIterator[Collected]:
    """A collector on 127.0.0.1 speaking the protocol, and the variables that point at it."""
    kept = Collector()
    protocol: str = request.param
    port = free_port()
    if protocol == "grpc":
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(kept, server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop: Any = functools.partial(server.stop, None)
    else:
        app = web.Application()
        app.router.add_post("/v1/traces", kept.receive)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = runner.cleanup
    yield (
        kept,
        {
            "ACCORD_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        },
    )
    await stop()


async def test_a_job_is_one_trace_across_the_four_services(
    database_url: str,
    nats_url: str,
    tmp_path: Path,
    site: str,
    collector: Collected,
) -> None:
    kept, otlp = collector
    env = service_env(
        "info",
        ACCORD_DATABASE_URL=database_url,
        ACCORD_NATS_URL=nats_url,
        ACCORD_AUDIT_DURABLE_NAME=f"audit-{tmp_path.name}"[:60],
        OTEL_BSP_SCHEDULE_DELAY="100",  # export within a tenth of a second
        **otlp,
    )
    async with Stack(tmp_path, env=env).running() as suite:
        await allow_local_site(suite.target("policy"))
        async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            # Two calls at once: admitted together in one batch, each job in its own trace.
            created, other = await asyncio.gather(
                *(
                    jobs.CreateJob(
                        job_service_pb2.CreateJobRequest(request_id=r, spec=scrape_spec(site)),
                        metadata=MD,
                    )
                    for r in ("traced", "traced-too")
                )
            )
            job_id = created.job.job_id
            for made in (created, other):
                watch = job_service_pb2.WatchJobRequest(job_id=made.job.job_id)
                changes = jobs.WatchJob(watch, metadata=MD, timeout=60)
                states = [r.change.state async for r in changes]
                assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED, states

        def mine(name: str, job: str = job_id) -> Span | None:
            return next(
                (
                    s
                    for s in kept.spans
                    if s.name == name and s.attributes.get("accord.job_id") == job
                ),
                None,
            )

        admit = await eventually(lambda: _now(mine("job.admit")), 30, "the admission span")
        other_id = other.job.job_id
        executed = await eventually(
            lambda: _now(mine("job.execute", other_id)), 30, "the other job's run"
        )
        other_admit = mine("job.admit", other_id)
        assert other_admit is not None
        assert other_admit.trace_id != admit.trace_id
        assert executed.trace_id == other_admit.trace_id

        # The two calls were decided in one EvaluateJobs, made in the trace of whichever
        # call ran the batch: that call and its decisions count for either job.
        either = {admit.trace_id, other_admit.trace_id}
        batched = {
            ("accord-orchestrator", "accord.policy.v1.PolicyService/EvaluateJobs"),
            ("accord-policy", "accord.policy.v1.PolicyService/EvaluateJobs"),
        }

        def wanted() -> set[tuple[str, str]]:
            return {
                (s.service, s.name)
                for s in kept.spans
                if s.trace_id == admit.trace_id
                or (s.trace_id in either and (s.service, s.name) in batched)
            }

        expected = batched | {
            ("accord-orchestrator", "accord.orchestrator.v1.JobService/CreateJob"),
            ("accord-orchestrator", "job.admit"),
            ("accord-orchestrator", "job.lease"),
            ("accord-executor", "job.execute"),
            ("accord-executor", "step.request"),
            ("accord-executor", "http.request"),
            ("accord-executor", "accord.policy.v1.PolicyService/AcquirePermit"),
            ("accord-policy", "accord.policy.v1.PolicyService/AcquirePermit"),
            ("accord-orchestrator", "job.succeeded"),
            ("accord-audit", "audit.append"),
        }

        audited_events = {
            "accord.orchestrator.v1.job.queued",
            "accord.orchestrator.v1.job.started",
            "accord.orchestrator.v1.job.succeeded",
            DECIDED,
        }

        def appended() -> set[str]:
            return {
                s.attributes["accord.event_type"]
                for s in kept.spans
                if s.name == "audit.append"
                and (
                    s.trace_id == admit.trace_id
                    or (s.trace_id in either and s.attributes["accord.event_type"] == DECIDED)
                )
            }

        async def complete() -> bool | None:
            return True if expected <= wanted() and audited_events <= appended() else None

        try:
            await eventually(complete, 30, "every span of the job in its trace")
        except AssertionError:
            missing = (expected - wanted(), audited_events - appended())
            raise AssertionError(f"missing {missing}") from None
        trace = [s for s in kept.spans if s.trace_id == admit.trace_id]

        async def streamed() -> bool | None:
            # Server streams are spans too: the test's WatchJob calls, each a trace of its own.
            watch_spans = [
                s
                for s in kept.spans
                if s.name == "accord.orchestrator.v1.JobService/WatchJob"
                and s.service == "accord-orchestrator"
            ]
            return True if len({s.trace_id for s in watch_spans}) == 2 else None

        await eventually(streamed, 30, "a server span for each WatchJob stream")
    assert {s.service for s in trace} == {
        "accord-orchestrator",
        "accord-policy",
        "accord-executor",
        "accord-audit",
    }
    by_id = {s.span_id: s for s in trace}
    execute = next(s for s in trace if s.name == "job.execute")
    assert by_id[execute.parent_id].name == "job.lease"  # the lease the executor ran under
    # Other jobs' spans (none here) and untraced work never join it: one root.
    assert [s.name for s in trace if not s.parent_id] == [
        "accord.orchestrator.v1.JobService/CreateJob"
    ]


async def _now(found: Span | None) -> Span | None:
    await asyncio.sleep(0)
    return found
