"""What both engines' request spans say: method, host and port (never the URL, whose path
and query are unbounded and may carry secrets), the status, and why a request failed."""

from __future__ import annotations

from contextlib import AbstractContextManager
from urllib.parse import urlsplit

from opentelemetry.trace import Span

from accord.common.v1 import job_result_pb2
from accord_executor.domain import results as r
from accord_kit import tracing


def request_span(method: str, url: str, parent: str = "") -> AbstractContextManager[Span | None]:
    """An `http.request` span, child of `parent` (a traceparent) or of the current span.
    The shared no-op, with nothing parsed, while tracing is off."""
    if not tracing.enabled():
        return tracing.span("http.request")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:  # a malformed URL fails its request; its span still says so
        parts, port = urlsplit(""), 0
    attributes = {
        "http.request.method": method,
        "server.address": parts.hostname or "",
        "server.port": port,
    }
    return tracing.span("http.request", parent=parent, attributes=attributes)


def answered(span: Span | None, status: int) -> None:
    """Note the response's HTTP status on its request's span."""
    if span is not None and status:
        span.set_attribute("http.response.status_code", status)


def failed(
    span: Span | None, failure: r.Failure, record: job_result_pb2.RequestRecord | None
) -> None:
    """Fail a request's span with the failure's code and, when the policy refused it, the
    policy's reasons from its record: bounded text, where the failure's message names the URL."""
    reasons = [reason.code for reason in record.reasons] if record is not None else []
    why = f"{failure.code}: {', '.join(reasons)}" if reasons else failure.code
    tracing.fail(span, why, {"accord.policy.reasons": reasons} if reasons else None)
