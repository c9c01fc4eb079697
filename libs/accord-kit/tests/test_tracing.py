"""Tracing is off and free by default, and when on nests a job's spans and carries their
context in events and log lines."""

from __future__ import annotations

import itertools

import pytest
import structlog
from google.protobuf import empty_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from accord_kit import events, tracing
from accord_kit.auth import ConfigError

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def envelope(traceparent: str | None = None) -> object:
    return events.envelope(
        producer="orchestrator",
        aggregate="job",
        event="queued",
        aggregate_id="j1",
        tenant_id="t1",
        payload=empty_pb2.Empty(),
        traceparent=traceparent,
    )


def test_off_by_default_and_free() -> None:
    assert not tracing.enabled()
    assert not tracing.configure("policy", environ={})
    assert not tracing.enabled()
    # One shared no-op: nothing is built per call.
    assert tracing.span("a") is tracing.span("b", parent=PARENT)
    with tracing.span("a") as current:
        assert current is None
    assert tracing.traceparent() == ""
    assert tracing.inject() == {}
    assert tracing.client_interceptors() == []
    assert tracing.mark("job.lease", PARENT) == PARENT
    assert not envelope().HasField("trace")  # type: ignore[attr-defined]


def test_endpoint_from_accord_or_standard_variable() -> None:
    assert tracing.endpoint_from({}) == ""
    assert tracing.endpoint_from({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://b:4317"}) == (
        "http://b:4317"
    )
    both = {"ACCORD_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://b"}
    assert tracing.endpoint_from(both) == "http://a:4317"


def test_protocol_is_grpc_unless_the_standard_variables_say_http_protobuf() -> None:
    assert tracing.protocol_from({}) == "grpc"
    assert tracing.protocol_from({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}) == (
        "http/protobuf"
    )
    both = {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
    }
    assert tracing.protocol_from(both) == "grpc"  # the traces-only variable wins
    with pytest.raises(ConfigError, match="http/json"):
        tracing.protocol_from({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(ConfigError):  # said before anything is started
        tracing.configure(
            "policy",
            environ={
                "ACCORD_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "x",
            },
        )
    assert not tracing.enabled()


def test_marks_join_their_parent_trace_and_events_carry_it(
    traced: InMemorySpanExporter,
) -> None:
    admitted = tracing.mark("job.admit", PARENT, {"accord.job_id": "j1"})
    leased = tracing.mark("job.lease", admitted)
    with tracing.span("job.execute", parent=leased, kind="consumer"):
        with tracing.span("step.request"):
            inner = tracing.traceparent()
        assert envelope().trace.traceparent != ""  # type: ignore[attr-defined]
    assert envelope(admitted).trace.traceparent == admitted  # type: ignore[attr-defined]
    spans = {s.name: s for s in traced.get_finished_spans()}
    assert set(spans) == {"job.admit", "job.lease", "job.execute", "step.request"}
    assert {format(s.context.trace_id, "032x") for s in spans.values()} == {PARENT.split("-")[1]}
    chain = ["job.admit", "job.lease", "job.execute", "step.request"]
    for parent, child in itertools.pairwise(chain):
        above = spans[child].parent
        assert above is not None
        assert above.span_id == spans[parent].context.span_id
    assert inner.split("-")[2] == format(spans["step.request"].context.span_id, "016x")


def test_log_lines_in_a_span_carry_its_trace_and_span_ids(
    traced: InMemorySpanExporter,
) -> None:
    with structlog.testing.capture_logs(processors=[tracing.add_ids]) as logs:
        structlog.get_logger().info("outside")
        with tracing.span("job.execute", parent=PARENT):
            structlog.get_logger().info("inside", job_id="j1")
    outside, inside = logs
    assert "trace_id" not in outside
    assert inside["trace_id"] == PARENT.split("-")[1]
    assert inside["job_id"] == "j1"
    assert inside["span_id"] == format(traced.get_finished_spans()[0].context.span_id, "016x")


def test_a_job_left_out_by_sampling_stays_out_in_every_later_span() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased  # noqa: PLC0415

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        admitted = tracing.mark("job.admit")
        leased = tracing.mark("job.lease", admitted)
        with tracing.span("job.execute", parent=leased):
            tracing.mark("job.succeeded", admitted)
    finally:
        tracing.shutdown()
    assert int(admitted.split("-")[3], 16) & 1 == 0  # carried, its sampled flag clear
    assert leased.split("-")[1] == admitted.split("-")[1]
    assert exporter.get_finished_spans() == ()


def test_a_failed_span_says_why_and_failing_nothing_is_free(traced: InMemorySpanExporter) -> None:
    tracing.fail(None, "POLICY_DENIED")  # what a span is while off: nothing to do
    with tracing.span("http.request") as current:
        tracing.fail(current, "POLICY_DENIED: DOMAIN_NOT_ALLOWED", {"reasons": ["X"]})
    (failed,) = traced.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "POLICY_DENIED: DOMAIN_NOT_ALLOWED"
    assert failed.attributes == {"reasons": ("X",)}
