"""Failure codes, step results and the job result built from saved step outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2, struct_pb2

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord_executor.domain.templates import TemplateError, render

# Stable failure codes reported with FailTask; clients and dashboards match on them.
HTTP_ERROR = "HTTP_ERROR"
TIMEOUT = "TIMEOUT"
ASSERTION_FAILED = "ASSERTION_FAILED"
STEP_NOT_SUPPORTED = "STEP_NOT_SUPPORTED"
TEMPLATE_ERROR = "TEMPLATE_ERROR"
INVALID_URL = "INVALID_URL"
INVALID_SELECTOR = "INVALID_SELECTOR"
NO_RESPONSE = "NO_RESPONSE"
RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"
ENGINE_UNAVAILABLE = "ENGINE_UNAVAILABLE"
EXECUTOR_SHUTDOWN = "EXECUTOR_SHUTDOWN"
EXECUTOR_ERROR = "EXECUTOR_ERROR"
# The policy refused a request (domain, network, robots.txt): another attempt is refused too.
POLICY_DENIED = "POLICY_DENIED"
# The policy service could not be asked, so nothing was sent: fail closed, try again later.
POLICY_UNAVAILABLE = "POLICY_UNAVAILABLE"
TOO_MANY_REDIRECTS = "TOO_MANY_REDIRECTS"
# The orchestrator refused the finished result as the contract does not allow it.
RESULT_REFUSED = "RESULT_REFUSED"

# Failures another attempt may not hit: the network, time, or this executor itself.
RETRYABLE = frozenset(
    {HTTP_ERROR, TIMEOUT, ENGINE_UNAVAILABLE, EXECUTOR_SHUTDOWN, EXECUTOR_ERROR, POLICY_UNAVAILABLE}
)

SUCCEEDED = job_result_pb2.STEP_STATUS_SUCCEEDED
FAILED = job_result_pb2.STEP_STATUS_FAILED
SKIPPED = job_result_pb2.STEP_STATUS_SKIPPED


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed: a stable code and a message for people."""

    code: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


class StepFailed(Exception):
    """Raised by a step's action; the engine turns it into a FAILED step result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.failure = Failure(code, message)


def to_value(value: Any) -> struct_pb2.Value:
    """A Python value (text, number, bool, null, list, dict) as a protobuf Value."""
    holder = struct_pb2.Struct()
    holder.update({"v": value})
    return holder.fields["v"]


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(seconds), nanos=round((seconds - int(seconds)) * 1e9))


def job_outputs(template: Mapping[str, str], outputs: Mapping[str, Any]) -> struct_pb2.Struct:
    """The job's result: the result template rendered over the outputs, or all of them."""
    if not template:
        return to_struct(outputs)
    rendered: dict[str, Any] = {}
    for key, text in template.items():
        try:
            rendered[key] = render(text, outputs)
        except TemplateError as exc:
            raise TemplateError(f"result_template[{key}]: {exc}") from None
    return to_struct(rendered)


def step_result(
    index: int,
    step: job_spec_pb2.Step,
    status: job_result_pb2.StepStatus.ValueType,
    *,
    seconds: float = 0.0,
    output: struct_pb2.Value | None = None,
    http_status: int = 0,
    error: str = "",
) -> job_result_pb2.StepResult:
    result = job_result_pb2.StepResult(
        index=index,
        name=step.name,
        status=status,
        http_status=http_status,
        duration=duration(seconds),
        error_message=error,
    )
    if output is not None:
        result.output.CopyFrom(output)
    return result
