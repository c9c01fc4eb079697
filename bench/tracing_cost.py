"""What tracing costs on the hot path, off (the default) beside on, per call in process.

    uv run python bench/tracing_cost.py [--calls 20000]

Times the calls a job's path makes into `accord_kit.tracing` and the envelope every event
gets: `span` around a step, the engines' span around each request (both engines, and the
browser's proxy), `mark` for a lease, `traceparent` at admission, and `events.envelope`.
"on" uses the SDK with a span processor that drops every span, so the figure is the SDK's
own work without any export. Prints microseconds per call; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from google.protobuf import empty_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from accord_executor.engines.spans import request_span
from accord_kit import events, tracing

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Drop(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def per_call_us(work: Callable[[], object], calls: int) -> float:
    for _ in range(min(calls, 1000)):  # warm
        work()
    started = time.perf_counter()
    for _ in range(calls):
        work()
    return (time.perf_counter() - started) / calls * 1e6


def step() -> None:
    with tracing.span("step.request", attributes={"index": 0}):
        pass


def request() -> None:
    with request_span("GET", "http://127.0.0.1:8080/items?page=2", PARENT):
        pass


def lease() -> str:
    return tracing.mark("job.lease", PARENT, {"accord.job_id": "j", "accord.attempt": 1})


def envelope() -> object:
    return events.envelope(
        producer="orchestrator",
        aggregate="job",
        event="queued",
        aggregate_id="j",
        tenant_id="t",
        payload=empty_pb2.Empty(),
        traceparent=PARENT,
    )


WORK: dict[str, Callable[[], object]] = {
    "span around a step": step,
    "request span": request,
    "mark (a lease)": lease,
    "traceparent()": tracing.traceparent,
    "events.envelope": envelope,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    calls = parser.parse_args().calls
    off = {name: per_call_us(work, calls) for name, work in WORK.items()}
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    tracing.install(provider)
    on = {name: per_call_us(work, calls) for name, work in WORK.items()}
    tracing.shutdown()
    print(f"tracing cost per call, {calls} calls each (microseconds)\n")
    print(f"{'call':<22} {'off':>8} {'on':>8}")
    for name in WORK:
        print(f"{name:<22} {off[name]:>8.2f} {on[name]:>8.2f}")


if __name__ == "__main__":
    main()
