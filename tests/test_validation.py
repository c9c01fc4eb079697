"""The native fast path of validation agrees with protovalidate's CEL on every contract message.

Every message of the published contracts is filled at random, many times, with values
chosen around the edges the rules care about (lengths, bounds, undefined enum values,
NaN, negative durations, bad UUIDs and patterns); both validators must report the very same
violations, path, rule id and message, in the same order.
"""

from __future__ import annotations

import importlib
import random
from importlib import resources
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from accord.orchestrator.v1 import job_service_pb2
from accord_kit import validation

SAMPLES = 25
STRINGS = [
    "",
    "a",
    "A-b_c.d:9",
    "has space",
    "é" * 3,
    "x" * 63,
    "x" * 64,
    "x" * 65,
    "y" * 128,
    "y" * 129,
    "z" * 513,
    "https://example.com/",
    "http://127.0.0.1:8080/x",
    "not a url",
    "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a",
    "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2",
    "acme",
    "DEFAULT",
    "jobs:read",
    "example.com",
    "*.example.com",
    "{{ steps.title }}",
    "{{ ",
]
INTS = [-(2**31), -1, 0, 1, 2, 3, 10, 16, 60, 99, 100, 101, 1000, 1001, 2**31 - 1]
DOUBLES = [float("nan"), float("inf"), -1.0, 0.0, 0.5, 1.0, 1.5, 100.0, 1e9]
SECONDS = [-5, 0, 1, 30, 59, 60, 61, 600, 3600, 86400 * 8]


def contract_messages() -> list[Descriptor]:
    data = resources.files("accord").joinpath("descriptor_set.binpb").read_bytes()
    pool = descriptor_pool.Default()
    found: list[Descriptor] = []
    for f in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        if f.package.startswith("accord."):
            importlib.import_module(f.name.removesuffix(".proto").replace("/", ".") + "_pb2")
            found.extend(pool.FindFileByName(f.name).message_types_by_name.values())
    return found


def scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if t == FieldDescriptor.TYPE_BYTES:
        return rng.choice([b"", b"x", b"y" * 300])
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FieldDescriptor.TYPE_ENUM:
        return rng.choice([*(v.number for v in field.enum_type.values), 99])
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(DOUBLES)
    value = rng.choice(INTS)
    unsigned = t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64)
    return abs(value) if unsigned else value


def fill(message: Any, rng: random.Random, depth: int = 0) -> None:  # noqa: PLR0912 - one branch per field kind
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = getattr(message, field.name)
            key_f, value_f = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            for _ in range(rng.choice([0, 1, 3])):
                key = scalar(key_f, rng)
                if value_f.message_type is None:
                    entries[key] = scalar(value_f, rng)
                elif depth < 3:
                    fill(entries[key], rng, depth + 1)
        elif field.is_repeated:
            items = getattr(message, field.name)
            for _ in range(rng.choice([0, 1, 2, 5] if field.message_type else [0, 1, 3, 17])):
                if field.message_type is None:
                    items.append(scalar(field, rng))
                elif depth < 3:
                    fill(items.add(), rng, depth + 1)
        elif field.message_type is not None:
            sub = getattr(message, field.name)
            if field.message_type.full_name == "google.protobuf.Duration":
                sub.FromSeconds(rng.choice(SECONDS))
                sub.nanos = rng.choice([0, 0, 500_000_000])
            elif field.message_type.full_name == "google.protobuf.Timestamp":
                sub.FromSeconds(rng.choice([0, 1_800_000_000]))
            elif depth < 3:
                fill(sub, rng, depth + 1)
                sub.SetInParent()
        else:
            setattr(message, field.name, scalar(field, rng))


def described(violations: list[Any]) -> list[tuple[str, str, str, bool]]:
    return [
        (str(v.proto.field), v.proto.rule_id, v.proto.message, v.proto.for_key) for v in violations
    ]


@pytest.mark.parametrize("descriptor", contract_messages(), ids=lambda d: d.full_name)
def test_native_checks_report_exactly_what_cel_reports(descriptor: Descriptor) -> None:
    native, reference = validation.validator(), validation.validator(native=False)
    cls = message_factory.GetMessageClass(descriptor)
    rng = random.Random(descriptor.full_name)  # noqa: S311 - reproducible test data
    for _ in range(SAMPLES):
        message = cls()
        fill(message, rng)
        expected = described(reference.collect_violations(message))
        assert described(native.collect_violations(message)) == expected, message


def test_the_fast_path_is_taken() -> None:
    """Guards the comparison above: the native validator really runs native predicates."""
    calls = []
    original = validation.PREDICATES["string.uuid"]
    validation.PREDICATES["string.uuid"] = lambda v, r: calls.append(v) or original(v, r)
    try:
        validation.validator().collect_violations(
            job_service_pb2.GetJobRequest(job_id="0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a")
        )
    finally:
        validation.PREDICATES["string.uuid"] = original
    assert calls, "no native predicate ran"
