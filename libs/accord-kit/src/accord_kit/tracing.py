"""One trace per job: OpenTelemetry spans carried across gRPC (metadata) and NATS (the
event envelope's trace context), exported with OTLP (over gRPC, or HTTP with protobuf
bodies) when an endpoint is configured.

Off by default and free when off: until `configure` finds an endpoint (or a test calls
`install`), `span` yields None without touching the SDK, `traceparent` is "", and channels
and servers add no interceptor work. Like structlog's, the tracer is set once per process,
in `main()`, before anything is started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from accord_kit.auth import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
ENDPOINT_VARIABLES = ("ACCORD_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The standard variables, the traces-only one first; OTLP/gRPC unless one says otherwise.
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOLS = ("grpc", "http/protobuf")
HTTP_TRACES_PATH = "/v1/traces"  # what the standard adds to a base endpoint for OTLP/HTTP
_PROPAGATOR = TraceContextTextMapPropagator()

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def endpoint_from(environ: Mapping[str, str]) -> str:
    """The OTLP endpoint Accord's own variable or the standard one names; "" for none."""
    return next((environ[v] for v in ENDPOINT_VARIABLES if environ.get(v)), "")


def protocol_from(environ: Mapping[str, str]) -> str:
    """The OTLP protocol the standard variables name: "grpc" (the default) or
    "http/protobuf"; ConfigError for any other."""
    protocol = next((environ[v] for v in PROTOCOL_VARIABLES if environ.get(v)), PROTOCOLS[0])
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported: set OTEL_EXPORTER_OTLP_PROTOCOL "
            f"to one of {', '.join(PROTOCOLS)}"
        )
    return protocol


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Export this process's spans over OTLP when an endpoint is set; True if so."""
    environ = os.environ if environ is None else environ
    endpoint = endpoint_from(environ)
    if not endpoint:
        return False
    protocol = protocol_from(environ)
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415 - loaded only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    provider = TracerProvider(resource=Resource.create({"service.name": f"accord-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(endpoint, protocol)))
    install(provider)
    structlog.get_logger("accord.tracing").info("tracing.on", endpoint=endpoint, protocol=protocol)
    return True


def _exporter(endpoint: str, protocol: str) -> SpanExporter:
    if protocol == "http/protobuf":
        # The endpoint is the collector's base URL, as the standard variable's is.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpExporter,
        )

        return HttpExporter(endpoint=endpoint.removesuffix("/") + HTTP_TRACES_PATH)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as GrpcExporter,
    )

    return GrpcExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))


def install(provider: TracerProvider) -> None:
    """Trace through `provider` from now on (tests pass one with an in-memory exporter)."""
    global _tracer, _provider  # noqa: PLW0603 - one tracer per process, set in main()
    _provider = provider
    _tracer = provider.get_tracer("accord")


def shutdown() -> None:
    """Flush what is buffered and stop tracing."""
    global _tracer, _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


_OFF = contextlib.nullcontext()


def span(
    name: str,
    *,
    parent: str = "",
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span, current within the block, child of `parent` (a traceparent) when given and
    of the current span otherwise. While tracing is off, a shared no-op that yields None."""
    if _tracer is None:
        return _OFF
    context = _extract(parent, "") if parent else None
    return _tracer.start_as_current_span(
        name, context=context, kind=SpanKind[kind.upper()], attributes=attributes
    )


def fail(current: Span | None, reason: str, attributes: Mapping[str, Any] | None = None) -> None:
    """Mark a span (as `span` yields it) failed for `reason`, a short bounded text (a code,
    never a URL); a no-op on None, which is what spans are while tracing is off."""
    if current is None:
        return
    if attributes:
        current.set_attributes(attributes)
    current.set_status(Status(StatusCode.ERROR, reason))


def traceparent() -> str:
    """The current span's context as a W3C `traceparent`; "" when off or outside a span."""
    if _tracer is None:
        return ""
    return inject().get(TRACEPARENT, "")


def inject() -> dict[str, str]:
    """The current trace context as W3C headers ({} when off)."""
    carrier: dict[str, str] = {}
    if _tracer is not None:
        _PROPAGATOR.inject(carrier)
    return carrier


def from_metadata(metadata: Any) -> str:
    """The traceparent a gRPC call carries in its metadata, or ""."""
    for key, value in metadata or ():
        if key == TRACEPARENT:
            return str(value)
    return ""


def _extract(parent: str, state: str) -> Any:
    carrier = {TRACEPARENT: parent, **({TRACESTATE: state} if state else {})}
    return _PROPAGATOR.extract(carrier)


def add_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the current trace and span ids on every line logged in a span."""
    if _tracer is None:
        return event
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def client_interceptors() -> list[Any]:
    """A CLIENT span around each outgoing unary call, its context sent as `traceparent`.

    Empty while tracing is off, so channels opened then carry no tracing work at all.
    """
    if _tracer is None:
        return []
    import grpc  # noqa: PLC0415 - the kit's tracing stays importable without a channel

    class Unary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            method = (
                details.method.decode() if isinstance(details.method, bytes) else details.method
            )
            with span(method.lstrip("/"), kind="client"):
                metadata = grpc.aio.Metadata(*(details.metadata or ()))
                for key, value in inject().items():
                    metadata[key] = value
                amended = grpc.aio.ClientCallDetails(
                    details.method,
                    details.timeout,
                    metadata,
                    details.credentials,
                    details.wait_for_ready,
                )
                call = await continuation(amended, request)
                await call  # the span lasts until the response (or its error) arrives
                return call

    return [Unary()]


def mark(name: str, parent: str = "", attributes: Mapping[str, Any] | None = None) -> str:
    """A span for a moment in a job's life (admitted, leased, ended, audited), child of
    `parent` or of the current span; returns its traceparent, or `parent` while off."""
    if _tracer is None:
        return parent
    with span(name, parent=parent, attributes=attributes):
        return traceparent()
