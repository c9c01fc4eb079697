"""An OTLP/gRPC trace receiver that counts spans and drops them: the far end for measuring
what tracing costs when it is on.

    uv run python bench/_otlp_sink.py --port 4317 &
    ACCORD_OTLP_ENDPOINT=http://127.0.0.1:4317 uv run python bench/noop_jobs.py

Prints the span count every 10 s while anything arrives; stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    async def Export(  # noqa: N802 - the generated servicer's method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def serve(port: int) -> None:
    server = grpc.aio.server()
    sink = Sink()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    seen = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 10)
        except TimeoutError:
            if sink.spans != seen:
                seen = sink.spans
                print(f"spans received: {seen}", flush=True)
    print(f"spans received: {sink.spans}", flush=True)
    await server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=4317)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
