"""A failed gRPC call, read once into plain data: its code, message and `google.rpc` details.

The command line prints it; the MCP server returns it as a tool error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class CallFailure:
    code: str
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: dict[str, str] = field(default_factory=dict)
    retry_delay_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.reason:
            found["reason"] = self.reason
        if self.metadata:
            found["metadata"] = self.metadata
        if self.field_violations:
            found["field_violations"] = self.field_violations
        if self.retry_delay_seconds is not None:
            found["retry_delay_seconds"] = self.retry_delay_seconds
        return found

    def lines(self) -> list[str]:
        """How a person reads it: the status first, then one line per detail."""
        head = f"{self.code}: {self.message}"
        lines = [f"{head} ({self.reason})" if self.reason else head]
        lines += [f"  {path}: {why}" for path, why in self.field_violations.items()]
        if self.retry_delay_seconds is not None:
            lines.append(f"  retry after {self.retry_delay_seconds:g}s")
        return lines


def read_failure(exc: grpc.RpcError) -> CallFailure:
    """The code, message and details of a failed call (sync or asyncio)."""
    code: grpc.StatusCode = exc.code()
    message: str = exc.details() or ""
    reason, metadata, violations, delay = "", {}, {}, None
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except ValueError:  # a status whose details disagree with its code
        status = None
    for detail in status.details if status is not None else ():
        info, bad, retry = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
            error_details_pb2.RetryInfo(),
        )
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(bad):
            violations.update({v.field: v.description for v in bad.field_violations})
        elif detail.Unpack(retry):
            delay = retry.retry_delay.ToTimedelta().total_seconds()
    return CallFailure(code.name, message, reason, metadata, violations, delay)
