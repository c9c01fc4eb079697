"""Failure codes, step results and the job result built from saved step outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import duration_pb2, struct_pb2

from accord.common.v1 import failure_pb2, job_result_pb2, job_spec_pb2
from accord_executor.domain.templates import render
from accord_kit.jobspec import TemplateError

PREFIX = "FAILURE_CODE_"


def _codes() -> dict[str, bool]:
    """Every failure code (accord.common.v1.FailureCode without its prefix) and whether
    another attempt may succeed (the value's `retryable` option)."""
    found = {}
    for value in failure_pb2.FailureCode.DESCRIPTOR.values:
        if value.number:
            name = value.name.removeprefix(PREFIX)
            found[name] = value.GetOptions().Extensions[failure_pb2.retryable]
    return found


def _code(value: failure_pb2.FailureCode.ValueType) -> str:
    return failure_pb2.FailureCode.Name(value).removeprefix(PREFIX)


# The codes reported with FailTask, the closed set declared once in the contract
# (accord/common/v1/failure.proto says when each happens); clients match on them.
CODES = _codes()
HTTP_ERROR = _code(failure_pb2.FAILURE_CODE_HTTP_ERROR)
TIMEOUT = _code(failure_pb2.FAILURE_CODE_TIMEOUT)
ASSERTION_FAILED = _code(failure_pb2.FAILURE_CODE_ASSERTION_FAILED)
STEP_NOT_SUPPORTED = _code(failure_pb2.FAILURE_CODE_STEP_NOT_SUPPORTED)
TEMPLATE_ERROR = _code(failure_pb2.FAILURE_CODE_TEMPLATE_ERROR)
INVALID_URL = _code(failure_pb2.FAILURE_CODE_INVALID_URL)
INVALID_SELECTOR = _code(failure_pb2.FAILURE_CODE_INVALID_SELECTOR)
NO_RESPONSE = _code(failure_pb2.FAILURE_CODE_NO_RESPONSE)
RESPONSE_TOO_LARGE = _code(failure_pb2.FAILURE_CODE_RESPONSE_TOO_LARGE)
ENGINE_UNAVAILABLE = _code(failure_pb2.FAILURE_CODE_ENGINE_UNAVAILABLE)
EXECUTOR_SHUTDOWN = _code(failure_pb2.FAILURE_CODE_EXECUTOR_SHUTDOWN)
EXECUTOR_ERROR = _code(failure_pb2.FAILURE_CODE_EXECUTOR_ERROR)
POLICY_DENIED = _code(failure_pb2.FAILURE_CODE_POLICY_DENIED)
POLICY_UNAVAILABLE = _code(failure_pb2.FAILURE_CODE_POLICY_UNAVAILABLE)
TOO_MANY_REDIRECTS = _code(failure_pb2.FAILURE_CODE_TOO_MANY_REDIRECTS)
RESULT_REFUSED = _code(failure_pb2.FAILURE_CODE_RESULT_REFUSED)
# Failures another attempt may not hit: the network, time, or this executor itself.
RETRYABLE = frozenset(code for code, retryable in CODES.items() if retryable)

SUCCEEDED = job_result_pb2.STEP_STATUS_SUCCEEDED
FAILED = job_result_pb2.STEP_STATUS_FAILED
SKIPPED = job_result_pb2.STEP_STATUS_SKIPPED


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed: a stable code and a message for people."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in CODES:  # the contract's set only: FailTask refuses the rest
            raise ValueError(f"{self.code!r} is not a FailureCode")

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
