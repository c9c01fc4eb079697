"""The one error tree of Accord and its mapping to gRPC statuses with google.rpc details.

Domain and service code raise AccordError subclasses; the server boundary (interceptors)
turns them into a status once, so servicers never catch or translate errors themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

DOMAIN = "accord.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field: its dotted path (e.g. `spec.steps[0].url`) and what is wrong."""

    field: str
    description: str
    reason: str = ""


class AccordError(Exception):
    """Base of every error a client may see; `reason` is stable and machine-readable."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = metadata or {}

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=DOMAIN, metadata=self.metadata
        )
        return [_pack(info)]

    def to_status(self) -> status_pb2.Status:
        code = getattr(code_pb2, self.code.name)
        return status_pb2.Status(code=code, message=self.message, details=self.details())


class InvalidArgument(AccordError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = violations or []

    def details(self) -> list[any_pb2.Any]:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.reason
                )
                for v in self.violations
            ]
        )
        return [*super().details(), _pack(bad)]


class NotFound(AccordError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(AccordError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(AccordError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Aborted(AccordError):
    """A lost race: a stale lease or etag. The client re-reads and decides again."""

    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class Unimplemented(AccordError):
    """An RPC of the published contract that this release does not serve yet."""

    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Unauthenticated(AccordError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(AccordError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class _Retryable(AccordError):
    def __init__(
        self, message: str, *, retry_after: timedelta, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, metadata=metadata)
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(self.retry_after)
        return [*super().details(), _pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class ResourceExhausted(_Retryable):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RATE_LIMITED"


class Unavailable(_Retryable):
    """A dependency is down; the call changed nothing and may be retried as is."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "DEPENDENCY_UNAVAILABLE"


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
