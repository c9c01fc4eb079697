"""The one error boundary and request gate of every RPC: auth, validation, errors, metrics.

Every handler is wrapped once here: the caller is authenticated, its scope checked and its
rate limited, the request is checked against its protovalidate rules before the servicer
runs, AccordError becomes a rich status, and anything else becomes a
generic INTERNAL that is logged with its traceback.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeAlias

import asyncpg
import grpc
import protovalidate
import structlog
from google.protobuf.message import Message
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram
from sqlalchemy import exc as sa_exc

from accord_kit import caller, pages, tracing, validation, wellformed
from accord_kit.auth import Authenticator
from accord_kit.errors import (
    AccordError,
    FieldViolation,
    InvalidArgument,
    Unavailable,
    Unimplemented,
)

log = structlog.get_logger("accord.rpc")

RPC_TOTAL = Counter("accord_rpc_total", "RPCs handled", ["method", "code"])
RPC_SECONDS = Histogram(
    "accord_rpc_seconds",
    "RPC handling time",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only in grpc-stubs
_validator = validation.validator()


def validate(message: Message, prefix: str = "") -> None:
    """Raise InvalidArgument with one field violation per broken rule: first the rules
    every request obeys (`accord_kit.wellformed`, which also lowercases UUID ids), then
    protovalidate's.

    `prefix` names where the message sits in the request, for messages checked after a
    field mask was applied.
    """
    violations = wellformed.check(message, prefix)
    if violations:  # protovalidate cannot even convert an ill-formed time to CEL
        raise InvalidArgument("request is invalid", violations)
    try:
        _validator.validate(message)
    except protovalidate.ValidationError as exc:
        violations = [
            FieldViolation(prefix + _path(v.proto.field), v.proto.message, v.proto.rule_id)
            for v in exc.violations
        ]
        raise InvalidArgument("request is invalid", violations) from None


def _path(field: Any) -> str:
    parts: list[str] = []
    for element in field.elements:
        parts.append(element.field_name)
        subscript = element.WhichOneof("subscript")
        if subscript is not None:
            parts[-1] += f"[{getattr(element, subscript)}]"
    return ".".join(parts)


# Failures to reach PostgreSQL, wherever they sit in the chain SQLAlchemy wraps them in.
_LOST = (
    ConnectionError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,  # the pool had no connection to give
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, admin kill
)


def _database_lost(exc: BaseException) -> bool:
    """A failure to reach PostgreSQL (down, restarting, pool exhausted), not a bug."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _LOST):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__
    return False


async def _abort(context: grpc.aio.ServicerContext[Any, Any], method: str, exc: Exception) -> None:
    if isinstance(exc, NotImplementedError):  # generated servicer default for unserved RPCs
        exc = Unimplemented(f"{method} is not served by this release")
    if not isinstance(exc, AccordError) and _database_lost(exc):
        log.warning("rpc.database_unavailable", method=method, error=type(exc).__name__)
        # The transaction did not commit (or the request id makes a retry return its job).
        exc = Unavailable(
            "the database is unreachable; retry the call as it is",
            retry_after=timedelta(seconds=1),
            metadata={"dependency": "postgres"},
        )
    error = exc if isinstance(exc, AccordError) else AccordError("internal error")
    if not isinstance(exc, AccordError):
        log.exception("rpc.internal_error", method=method)
    RPC_TOTAL.labels(method, error.code.name).inc()
    # grpc-stubs lacks abort_with_status, which grpc.aio has had since 1.30.
    await context.abort_with_status(rpc_status.to_status(error.to_status()))  # type: ignore[attr-defined]


def _wrap_unary(
    auth: Authenticator, page_key: bytes, method: str, behavior: Callable[..., Awaitable[Any]]
) -> Callable[..., Any]:
    async def handler(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            bound = caller.bind(auth.admit(method, context.invocation_metadata()))
            key = pages.bind(page_key)
            try:
                validate(request)
                response = await behavior(request, context)
            finally:
                pages.unbind(key)
                caller.unbind(bound)
        except Exception as exc:
            await _abort(context, method, exc)
        RPC_TOTAL.labels(method, "OK").inc()
        RPC_SECONDS.labels(method).observe(time.perf_counter() - started)
        return response

    return handler


def _wrap_stream(
    auth: Authenticator, page_key: bytes, method: str, behavior: Callable[..., Any]
) -> Callable[..., Any]:
    async def handler(
        request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        try:
            # Bound for the whole stream: the generator runs in this call's own task.
            caller.bind(auth.admit(method, context.invocation_metadata()))
            pages.bind(page_key)
            validate(request)
            async for item in behavior(request, context):
                yield item
        except Exception as exc:
            await _abort(context, method, exc)
        RPC_TOTAL.labels(method, "OK").inc()

    return handler


def _traced(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """The behavior inside a SERVER span, child of the caller's `traceparent` if it sent one."""

    async def handler(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        parent = tracing.from_metadata(context.invocation_metadata())
        with tracing.span(method.lstrip("/"), parent=parent, kind="server"):
            return await behavior(request, context)

    return handler


def _traced_stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A server stream inside one SERVER span, from the request to its last message."""

    async def handler(
        request: Message, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        parent = tracing.from_metadata(context.invocation_metadata())
        with tracing.span(method.lstrip("/"), parent=parent, kind="server"):
            async for item in behavior(request, context):
                yield item

    return handler


class BoundaryInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every unary-request handler; health and reflection pass through untouched."""

    def __init__(self, auth: Authenticator, page_key: bytes) -> None:
        self._auth = auth
        self._page_key = page_key

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith("/accord."):
            return handler
        if handler.unary_unary is not None:
            behavior = handler.unary_unary
            if tracing.enabled():  # off, not even a check per call: the handler is as it was
                behavior = _traced(method, behavior)
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(self._auth, self._page_key, method, behavior),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            streamed = handler.unary_stream
            if tracing.enabled():
                streamed = _traced_stream(method, streamed)
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(self._auth, self._page_key, method, streamed),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
