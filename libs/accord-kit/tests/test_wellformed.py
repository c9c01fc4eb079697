"""The rules every request obeys hold for every field of every RPC's request.

Driven by the descriptor set: each string field reachable from a request (through nested
messages, repeated fields and maps, three levels deep) is given a NUL in turn, each
duration and timestamp a value protobuf does not define, and the boundary's check must
name that very field. A field added to any contract is covered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib import resources

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    timestamp_pb2,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from accord.orchestrator.v1 import job_service_pb2
from accord.orchestrator.v1 import worker_service_pb2 as worker_pb2
from accord.policy.v1 import policy_pb2
from accord_kit import wellformed
from accord_kit.boundary import validate
from accord_kit.errors import InvalidArgument

Setter = Callable[[Message], None]
BROKEN: dict[str, Message] = {
    "google.protobuf.Duration": duration_pb2.Duration(seconds=5, nanos=-1),
    "google.protobuf.Timestamp": timestamp_pb2.Timestamp(seconds=253_402_300_800),
}
RULES = {
    "google.protobuf.Duration": wellformed.DURATION,
    "google.protobuf.Timestamp": wellformed.TIMESTAMP,
}


def request_types() -> list[Descriptor]:
    data = resources.files("accord").joinpath("descriptor_set.binpb").read_bytes()
    pool = descriptor_pool.Default()
    found: dict[str, Descriptor] = {}
    for f in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        if f.package.startswith("accord."):
            importlib.import_module(f.name.removesuffix(".proto").replace("/", ".") + "_pb2")
            for service in pool.FindFileByName(f.name).services_by_name.values():
                for method in service.methods:
                    found[method.input_type.full_name] = method.input_type
    return sorted(found.values(), key=lambda d: d.full_name)


def string_paths(descriptor: Descriptor, depth: int = 0) -> Iterator[tuple[str, Setter]]:
    """(expected violation path, a function that breaks the rule there) for every string
    (a NUL), duration (nanos of the wrong sign) and timestamp (the year 10000)."""
    for field in descriptor.fields:
        yield from _field_paths(field, depth)


def _field_paths(field: FieldDescriptor, depth: int) -> Iterator[tuple[str, Setter]]:
    name = field.name
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        yield from _map_paths(field, depth)
    elif field.message_type is not None and field.message_type.full_name in BROKEN:
        broken = BROKEN[field.message_type.full_name]
        if field.is_repeated:
            yield f"{name}[0]", lambda m: getattr(m, name).add().MergeFrom(broken)
        else:
            yield name, lambda m: getattr(m, name).MergeFrom(broken)
    elif field.type == FieldDescriptor.TYPE_STRING:
        if field.is_repeated:
            yield f"{name}[0]", lambda m: getattr(m, name).append("a\x00")
        else:
            yield name, lambda m: setattr(m, name, "a\x00")
    elif field.message_type is not None and depth < 3:
        for path, setter in string_paths(field.message_type, depth + 1):
            if field.is_repeated:
                yield f"{name}[0].{path}", _in_list(name, setter)
            else:
                yield f"{name}.{path}", _in_message(name, setter)


def _map_paths(field: FieldDescriptor, depth: int) -> Iterator[tuple[str, Setter]]:
    name = field.name
    value = field.message_type.fields_by_name["value"]
    key = field.message_type.fields_by_name["key"]
    if key.type == FieldDescriptor.TYPE_STRING:
        yield f'{name}["k\\u0000"]', _map_key(name, value)
    if value.type == FieldDescriptor.TYPE_STRING:
        yield f'{name}["k"]', lambda m: getattr(m, name).__setitem__("k", "v\x00")
    elif value.message_type is not None and depth < 3:
        for path, setter in string_paths(value.message_type, depth + 1):
            yield f'{name}["k"].{path}', _in_map(name, setter)


def _map_key(name: str, value: FieldDescriptor) -> Setter:
    def setter(message: Message) -> None:
        entries = getattr(message, name)
        if value.message_type is not None:
            entries["k\x00"].SetInParent()  # a message value is created on access
        else:
            entries["k\x00"] = "" if value.type == FieldDescriptor.TYPE_STRING else 0

    return setter


def _in_map(name: str, setter: Setter) -> Setter:
    return lambda m: setter(getattr(m, name)["k"])


def _in_list(name: str, setter: Setter) -> Setter:
    return lambda m: setter(getattr(m, name).add())


def _in_message(name: str, setter: Setter) -> Setter:
    return lambda m: setter(getattr(m, name))


CASES = [
    pytest.param(descriptor, path, setter, id=f"{descriptor.name}.{path}")
    for descriptor in request_types()
    for path, setter in string_paths(descriptor)
]


def test_every_request_has_strings_to_check() -> None:
    """Guards the parametrisation: the descriptor walk finds the contracts' strings."""
    assert len(CASES) > 100
    assert any(case.id == "CancelJobRequest.reason" for case in CASES)
    assert any(case.id == 'CreateJobRequest.spec.labels["k"]' for case in CASES)
    assert any(case.id == "PollTasksRequest.lease_duration" for case in CASES)
    assert any(case.id == "ListJobsRequest.create_time_after" for case in CASES)


@pytest.mark.parametrize(
    ("seconds", "nanos", "valid"),
    [
        (315_576_000_000, 999_999_999, True),
        (-315_576_000_000, -999_999_999, True),
        (315_576_000_001, 0, False),
        (1, -1, False),
        (-1, 1, False),
        (0, 1_000_000_000, False),
    ],
)
def test_durations_protobuf_defines_pass(seconds: int, nanos: int, valid: bool) -> None:
    request = worker_pb2.PollTasksRequest(wait=duration_pb2.Duration(seconds=seconds, nanos=nanos))
    expected = [] if valid else [("wait", wellformed.DURATION)]
    assert [(v.field, v.reason) for v in wellformed.check(request)] == expected


@pytest.mark.parametrize(
    ("seconds", "nanos", "valid"),
    [
        (-62_135_596_800, 0, True),
        (253_402_300_799, 999_999_999, True),
        (-62_135_596_801, 0, False),
        (253_402_300_800, 0, False),
        (0, -1, False),
    ],
)
def test_timestamps_protobuf_defines_pass(seconds: int, nanos: int, valid: bool) -> None:
    request = job_service_pb2.ListJobsRequest(
        create_time_after=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    )
    expected = [] if valid else [("create_time_after", wellformed.TIMESTAMP)]
    assert [(v.field, v.reason) for v in wellformed.check(request)] == expected


@pytest.mark.parametrize(("descriptor", "path", "setter"), CASES)
def test_a_broken_value_anywhere_in_any_request_is_refused(
    descriptor: Descriptor, path: str, setter: Setter
) -> None:
    message = message_factory.GetMessageClass(descriptor)()
    setter(message)
    violations = wellformed.check(message)
    assert len(violations) == 1
    assert violations[0].field == path
    assert violations[0].reason in (wellformed.NO_NUL, *RULES.values())


def test_the_boundary_refuses_a_nul_with_a_field_violation() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate(job_service_pb2.CancelJobRequest(job_id=str(_ID), reason="stop\x00now"))
    assert [(v.field, v.reason) for v in raised.value.violations] == [("reason", wellformed.NO_NUL)]


_ID = "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a"


def test_uuid_ids_are_case_insensitive() -> None:
    request = job_service_pb2.GetJobRequest(job_id=_ID.upper())
    validate(request)
    assert request.job_id == _ID


def test_text_that_is_not_an_id_keeps_its_case() -> None:
    request = job_service_pb2.CancelJobRequest(job_id=_ID, reason="Stopped By OPS")
    validate(request)
    assert request.reason == "Stopped By OPS"


@pytest.mark.parametrize(
    "message",
    [
        job_service_pb2.ListJobsRequest(states=[99]),
        policy_pb2.DomainRule(domain="example.com", allowed_engines=[99]),
    ],
    ids=["ListJobsRequest.states", "DomainRule.allowed_engines"],
)
def test_undefined_values_of_repeated_enums_are_refused(message: Message) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate(message)
    assert [v.reason for v in raised.value.violations] == ["enum.defined_only"]
