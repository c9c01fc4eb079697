"""The one shape of every contract (protos/README.md), checked on the descriptor set.

Driven by the contracts, not by a list: every field reachable from any RPC's request, in
every service, is held to the rules, so an RPC added later is held to them too.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from importlib import resources

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from accord.common.v1 import auth_pb2, failure_pb2, idempotency_pb2, job_spec_pb2
from accord.orchestrator.v1 import worker_service_pb2
from accord_kit.boundary import validate
from accord_kit.errors import InvalidArgument
from buf.validate import validate_pb2

# Ids the client chooses, each with a pattern of its own; every other `*_id` names a
# resource the server created, and is a UUID.
CLIENT_CHOSEN_IDS = {"request_id", "worker_id", "token_id", "aggregate_id", "artifact_id"}
# A mutating RPC (protos/README.md): one that needs a write or admin scope and is not a read.
MUTATING_SCOPES = (":write", ":admin")
READ_VERBS = ("Get", "List", "Watch", "Stream")


def _services() -> list[Descriptor]:
    data = resources.files("accord").joinpath("descriptor_set.binpb").read_bytes()
    pool = descriptor_pool.Default()
    found = []
    for f in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        if f.package.startswith("accord."):
            importlib.import_module(f.name.removesuffix(".proto").replace("/", ".") + "_pb2")
            found.extend(pool.FindFileByName(f.name).services_by_name.values())
    return found


def request_fields() -> Iterator[tuple[str, FieldDescriptor]]:
    """(where, field) for every field of every message reachable from a request."""
    seen: set[str] = set()
    pending = [m.input_type for s in _services() for m in s.methods]
    while pending:
        message = pending.pop()
        if message.full_name in seen or message.full_name.startswith("google."):
            continue
        seen.add(message.full_name)
        for field in message.fields:
            target = field.message_type
            if target is not None and target.GetOptions().map_entry:
                yield f"{message.full_name}.{field.name}", field
                value = target.fields_by_name["value"].message_type
                if value is not None:
                    pending.append(value)
            elif target is not None:
                pending.append(target)
            else:
                yield f"{message.full_name}.{field.name}", field


def rules(field: FieldDescriptor) -> validate_pb2.FieldRules:
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return validate_pb2.FieldRules()
    return options.Extensions[validate_pb2.field]


FIELDS = sorted(request_fields(), key=lambda item: item[0])


def test_the_walk_sees_every_service() -> None:
    assert len(_services()) >= 7
    assert any(where == "accord.orchestrator.v1.ListJobsRequest.states" for where, _ in FIELDS)


def test_every_enum_is_defined_only_repeated_ones_included() -> None:
    loose = []
    for where, field in FIELDS:
        if field.type != FieldDescriptor.TYPE_ENUM:
            continue
        found = rules(field)
        enum = found.repeated.items.enum if field.is_repeated else found.enum
        if not enum.defined_only:
            loose.append(where)
    assert loose == []


def test_every_id_a_server_assigned_is_a_uuid() -> None:
    """One convention: UUIDs, checked by the contract and matched in any case.

    Held on the requests' own fields (and their items); ids inside a resource sent whole
    (a Policy, a Schedule, a task's result) are the server's, read back and not trusted.
    """
    other = []
    for where, field in FIELDS:
        message = where.rsplit(".", 1)[0]
        if not (message.endswith("Request") or ".Request." in message or "Request." in message):
            continue
        if field.type != FieldDescriptor.TYPE_STRING or not field.name.endswith("_id"):
            continue
        found = rules(field)
        string = found.repeated.items.string if field.is_repeated else found.string
        if field.name not in CLIENT_CHOSEN_IDS and not string.uuid:
            other.append(where)
    assert other == []


def _refused(message: object) -> list[str]:
    try:
        validate(message)  # type: ignore[arg-type]
    except InvalidArgument as exc:
        return [v.field for v in exc.violations]
    return []


@pytest.mark.parametrize(
    ("multiplier", "refused"),
    [(0.0, False), (1.0, False), (2.5, False), (10.0, False), (0.5, True), (10.5, True)],
)
def test_backoff_multiplier_is_what_its_comment_says(multiplier: float, refused: bool) -> None:
    """1.0 to 10.0, 0 meaning the default."""
    policy = job_spec_pb2.RetryPolicy(backoff_multiplier=multiplier)
    assert _refused(policy) == (["backoff_multiplier"] if refused else [])


@pytest.mark.parametrize(
    ("seconds", "refused"), [(None, False), (1, False), (600, False), (0, True), (601, True)]
)
def test_lease_duration_is_what_its_comment_says(seconds: int | None, refused: bool) -> None:
    """1 s to 10 min, unset meaning 30 s."""
    request = worker_service_pb2.PollTasksRequest(worker_id="w", max_tasks=1)
    if seconds is not None:
        request.lease_duration.CopyFrom(duration_pb2.Duration(seconds=seconds))
    assert _refused(request) == (["lease_duration"] if refused else [])


def test_every_list_rpc_pages() -> None:
    """A list can grow: page_size and page_token in, next_page_token out."""
    unpaged = []
    for service in _services():
        for method in service.methods:
            if not method.name.startswith("List"):
                continue
            request, response = method.input_type.fields_by_name, method.output_type.fields_by_name
            size, token = request.get("page_size"), request.get("page_token")
            following = response.get("next_page_token")
            if not (
                size is not None
                and size.type == FieldDescriptor.TYPE_INT32
                and rules(size).int32.lte > 0
                and token is not None
                and rules(token).string.max_len > 0
                and following is not None
            ):
                unpaged.append(method.full_name)
    assert unpaged == []


def _bounded(string: validate_pb2.StringRules) -> bool:
    if string.max_len or string.len or list(getattr(string, "in")) or string.uuid:
        return True
    if string.ip_prefix:
        return True
    # A pattern bounds the length when nothing in it (outside a [class]) repeats unbounded.
    outside = re.sub(r"\[(?:\\.|[^\]])*\]", "c", string.pattern)
    return bool(string.pattern) and not re.search(r"[*+]|\{\d+,\}", outside)


def test_every_string_has_a_length_limit() -> None:
    """Strings reachable from any request, map keys and values included."""
    unlimited = []
    for where, field in FIELDS:
        found = rules(field)
        target = field.message_type
        if target is not None and target.GetOptions().map_entry:
            key, value = target.fields_by_name["key"], target.fields_by_name["value"]
            if key.type == FieldDescriptor.TYPE_STRING and not _bounded(found.map.keys.string):
                unlimited.append(f"{where} (keys)")
            if value.type == FieldDescriptor.TYPE_STRING and not _bounded(found.map.values.string):
                unlimited.append(f"{where} (values)")
        elif field.type == FieldDescriptor.TYPE_STRING:
            string = found.repeated.items.string if field.is_repeated else found.string
            if not _bounded(string):
                unlimited.append(where)
    assert unlimited == []


def _mutating(method: MethodDescriptor) -> bool:
    scope = method.GetOptions().Extensions[auth_pb2.required_scope]
    return scope.endswith(MUTATING_SCOPES) and not method.name.startswith(READ_VERBS)


def test_every_mutating_rpc_has_a_request_id() -> None:
    """Each takes the creates' `request_id` (same pattern), or names the request field that
    already keys its repeats with the `idempotency_key` method option."""
    pattern = "^[A-Za-z0-9._:-]{1,128}$"
    mutating, without = [], []
    for service in _services():
        for method in service.methods:
            if not _mutating(method):
                continue
            mutating.append(method.name)
            request = method.input_type.fields_by_name
            key = method.GetOptions().Extensions[idempotency_pb2.idempotency_key]
            field = request.get("request_id")
            if key:
                if key not in request or field is not None:
                    without.append(f"{method.full_name} (idempotency_key {key!r})")
            elif field is None or field.type != FieldDescriptor.TYPE_STRING:
                without.append(method.full_name)
            elif rules(field).string.pattern not in (pattern, "^[A-Za-z0-9._:-]{1,120}$"):
                without.append(f"{method.full_name} (pattern)")
    assert without == []
    # The rule sees the calls it is meant for, and no read.
    assert {"CancelJob", "BackfillSchedule", "UpdatePolicy", "RevokeToken"} <= set(mutating)
    assert not {"GetJob", "ListRevokedTokens", "EvaluateJob", "FailTask"} & set(mutating)


def test_failtask_takes_the_failure_codes_and_nothing_else() -> None:
    """FailTaskRequest.error_code's `in` list is accord.common.v1.FailureCode, named
    without its prefix: the one closed set, which the executor's codes come from."""
    field = worker_service_pb2.FailTaskRequest.DESCRIPTOR.fields_by_name["error_code"]
    listed = list(getattr(rules(field).string, "in"))
    names = [
        v.name.removeprefix("FAILURE_CODE_")
        for v in failure_pb2.FailureCode.DESCRIPTOR.values
        if v.number
    ]
    assert listed == names
    lease = worker_service_pb2.LeaseRef(job_id="0b3e5ad2-8f3a-4c43-9a52-3c1e1c6f1a10", attempt=1)
    for code, refused in [("TIMEOUT", False), ("HTTP_STATUS", True), ("", True)]:
        request = worker_service_pb2.FailTaskRequest(worker_id="w", lease=lease, error_code=code)
        assert _refused(request) == (["error_code"] if refused else [])
