"""The executor reports only the contract's failure codes (accord.common.v1.FailureCode)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from accord.common.v1 import failure_pb2
from accord_executor.domain import results as r

SOURCE = Path(r.__file__).resolve().parents[1]


def test_the_codes_are_the_enums_with_its_retryable_option() -> None:
    values = [v for v in failure_pb2.FailureCode.DESCRIPTOR.values if v.number]
    assert sorted(r.CODES) == sorted(v.name.removeprefix("FAILURE_CODE_") for v in values)
    assert {
        "HTTP_ERROR",
        "TIMEOUT",
        "ENGINE_UNAVAILABLE",
        "EXECUTOR_SHUTDOWN",
        "EXECUTOR_ERROR",
        "POLICY_UNAVAILABLE",
    } == r.RETRYABLE
    with pytest.raises(ValueError, match="not a FailureCode"):
        r.Failure("HTTP_STATUS", "a code outside the set")


def test_every_failure_the_source_builds_names_a_code_of_the_set() -> None:
    """Each Failure(...) / StepFailed(...) in the executor's source passes one of the
    results module's code names, or a code it was handed (failure.code), never a string."""
    loose = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            called = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            if called not in ("Failure", "StepFailed"):
                continue
            first = node.args[0]
            name = first.attr if isinstance(first, ast.Attribute) else getattr(first, "id", "")
            if isinstance(first, ast.Call):  # a helper choosing among the codes
                continue
            if name == "code" or (name in r.CODES and getattr(r, name) == name):
                continue
            loose.append(f"{path.name}:{node.lineno}")
    assert loose == []
