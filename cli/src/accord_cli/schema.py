"""JSON Schema (2020-12) for a proto message, read from its descriptor, with the protos'
comments as descriptions: the MCP tools' inputs can never drift from the contract.

The schema describes the proto3 JSON mapping that `json_format.ParseDict` accepts, with
the proto field names: 64-bit integers as numbers or strings, enums by name, Timestamp as
RFC 3339, Duration as `"1.5s"`, Struct/Value as any JSON, maps as objects. Messages are in
`$defs` (by full name) so recursive types stay finite. The protovalidate rules that JSON
Schema can say (see `accord_cli.rules`) are carried over; the server still checks them all.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from accord_cli.rules import constrain, oneof_required, required_fields

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": ["number", "string"]},
    FieldDescriptor.TYPE_FLOAT: {"type": ["number", "string"]},
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": ["integer", "string"], "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SINT64: {"type": ["integer", "string"], "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["integer", "string"], "pattern": "^-?[0-9]+$"},
    FieldDescriptor.TYPE_UINT64: {"type": ["integer", "string"], "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["integer", "string"], "pattern": "^[0-9]+$"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "required": ["@type"]},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.Int32Value": {"type": "integer"},
    "google.protobuf.DoubleValue": {"type": ["number", "string"]},
    "google.protobuf.Int64Value": {"type": ["integer", "string"]},
}


@functools.cache
def comments() -> dict[str, str]:
    """Leading comments of every message, field, enum, service and method, by full name."""
    data = resources.files("accord").joinpath("descriptor_set.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    found: dict[str, str] = {}
    for f in files:
        by_path = {
            tuple(loc.path): loc.leading_comments.strip()
            for loc in f.source_code_info.location
            if loc.leading_comments
        }
        prefix = f"{f.package}." if f.package else ""
        for i, message in enumerate(f.message_type):
            _message_comments(message, prefix, (4, i), by_path, found)
        for i, enum in enumerate(f.enum_type):
            _note(found, f"{prefix}{enum.name}", by_path, (5, i))
        for i, service in enumerate(f.service):
            name = f"{prefix}{service.name}"
            _note(found, name, by_path, (6, i))
            for j, method in enumerate(service.method):
                _note(found, f"{name}.{method.name}", by_path, (6, i, 2, j))
    return found


def _message_comments(
    message: descriptor_pb2.DescriptorProto,
    prefix: str,
    path: tuple[int, ...],
    by_path: dict[tuple[int, ...], str],
    found: dict[str, str],
) -> None:
    name = f"{prefix}{message.name}"
    _note(found, name, by_path, path)
    for k, field in enumerate(message.field):
        _note(found, f"{name}.{field.name}", by_path, (*path, 2, k))
    for j, nested in enumerate(message.nested_type):
        _message_comments(nested, f"{name}.", (*path, 3, j), by_path, found)
    for j, enum in enumerate(message.enum_type):
        _note(found, f"{name}.{enum.name}", by_path, (*path, 4, j))


def _note(
    found: dict[str, str], name: str, by_path: dict[tuple[int, ...], str], path: tuple[int, ...]
) -> None:
    if path in by_path:
        found[name] = " ".join(by_path[path].split())


def message_schema(
    descriptor: Descriptor,
    omit: frozenset[str] = frozenset(),
    optional: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The JSON Schema of `descriptor` as a tool input: an object, its messages in `$defs`.

    `omit` fields are left out; `optional` ones are not required even if the rules say so
    (the caller fills them in).
    """
    defs: dict[str, dict[str, Any]] = {}
    root = _object(descriptor, defs, omit)
    if "required" in root:
        root["required"] = [n for n in root["required"] if n not in optional]
        if not root["required"]:
            del root["required"]
    if defs:
        root["$defs"] = defs
    return root


def _object(descriptor: Descriptor, defs: dict[str, Any], omit: frozenset[str]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name in omit:
            continue
        schema = constrain(field, _field(field, defs))
        if note := comments().get(field.full_name):
            schema = {**schema, "description": note}
        properties[field.name] = schema
    found: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required := [n for n in required_fields(descriptor) if n not in omit]:
        found["required"] = required
    if note := comments().get(descriptor.full_name):
        found["description"] = note
    # At most one member of each oneof; the server says when one is required.
    exclusive: list[dict[str, Any]] = [
        {"not": {"required": [a.name, b.name]}}
        for o in descriptor.oneofs
        for i, a in enumerate(o.fields)
        for b in o.fields[i + 1 :]
        if a.name not in omit and b.name not in omit
    ]
    # And at least one member of a oneof the rules require.
    exclusive += [
        {"anyOf": [{"required": [name]} for name in names]}
        for names in oneof_required(descriptor)
        if not omit & set(names)
    ]
    if exclusive:
        found["allOf"] = exclusive
    return found


def _field(field: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, defs)}
    single = _single(field, defs)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(field: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if field.enum_type is not None:
        return _enum(field.enum_type)
    if field.message_type is None:
        return dict(_SCALARS[field.type])
    name = field.message_type.full_name
    if name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[name])
    if name not in defs:
        defs[name] = {}  # claimed first: a recursive reference finds it
        defs[name] = _object(field.message_type, defs, frozenset())
    return {"$ref": f"#/$defs/{name}"}


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    found: dict[str, Any] = {"type": ["string", "integer"], "enum": [v.name for v in enum.values]}
    found["enum"] += [v.number for v in enum.values]
    if note := comments().get(enum.full_name):
        found["description"] = note
    return found
