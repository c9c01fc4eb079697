"""The protovalidate rules of a field, as the JSON Schema keywords that say the same.

Only rules with an exact JSON Schema equal are carried (lengths, patterns, bounds, sets,
item and pair counts, required fields and oneofs); CEL expressions and the like stay the
server's alone, which checks every rule anyway.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from buf.validate import validate_pb2

_NUMERIC = (
    "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64", "float", "double",
)  # fmt: skip
_BOUNDS = {"gte": "minimum", "lte": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}
_STRING = {"min_len": "minLength", "max_len": "maxLength", "pattern": "pattern"}
_UUID = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def field_rules(field: FieldDescriptor) -> validate_pb2.FieldRules:
    return field.GetOptions().Extensions[validate_pb2.field]


def required_fields(descriptor: Descriptor) -> list[str]:
    """Fields whose rules say `required`."""
    return [f.name for f in descriptor.fields if field_rules(f).required]


def oneof_required(descriptor: Descriptor) -> list[list[str]]:
    """For each oneof that must be set, its members."""
    found = []
    for oneof in descriptor.oneofs:
        if oneof.GetOptions().Extensions[validate_pb2.oneof].required:
            found.append([f.name for f in oneof.fields])
    return found


def constrain(field: FieldDescriptor, schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (the field's type) narrowed by the field's rules."""
    rules = field_rules(field)
    kind = rules.WhichOneof("type")
    if kind == "repeated" and "items" in schema:
        typed = rules.repeated
        schema = {**schema, **_counts(typed, ("min_items", "minItems"), ("max_items", "maxItems"))}
        if typed.unique:
            schema["uniqueItems"] = True
        if typed.HasField("items"):
            schema["items"] = _scalar(typed.items, schema["items"], field.enum_type)
        return schema
    if kind == "map" and schema.get("type") == "object":
        pairs = rules.map
        counts = _counts(pairs, ("min_pairs", "minProperties"), ("max_pairs", "maxProperties"))
        schema = {**schema, **counts}
        if pairs.HasField("keys"):
            schema["propertyNames"] = _scalar(pairs.keys, {"type": "string"}, None)
        if pairs.HasField("values") and field.message_type is not None:
            value = field.message_type.fields_by_name["value"]
            schema["additionalProperties"] = _scalar(
                pairs.values, schema["additionalProperties"], value.enum_type
            )
        return schema
    return _scalar(rules, schema, field.enum_type)


def _scalar(
    rules: validate_pb2.FieldRules, schema: dict[str, Any], enum: EnumDescriptor | None
) -> dict[str, Any]:
    kind = rules.WhichOneof("type")
    if kind is None or "$ref" in schema:
        return schema
    typed: Any = getattr(rules, kind)
    found = dict(schema)
    if kind == "string":
        found.update(_string(typed))
    elif kind in _NUMERIC:
        for name, keyword in _BOUNDS.items():
            if typed.HasField(name):
                found[keyword] = getattr(typed, name)
    elif kind == "enum" and enum is not None:
        allowed = _enum_numbers(typed, enum)
        names = [v.name for v in enum.values if v.number in allowed]
        found["enum"] = [*names, *sorted(allowed)]
        return found
    if kind in ("string", *_NUMERIC):
        if typed.HasField("const"):
            found["const"] = typed.const
        if getattr(typed, "in"):
            found["enum"] = list(getattr(typed, "in"))
    return found


def _string(typed: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        keyword: getattr(typed, name) for name, keyword in _STRING.items() if typed.HasField(name)
    }
    if typed.HasField("len"):
        found["minLength"] = found["maxLength"] = typed.len
    if typed.uuid:
        found["pattern"] = _UUID
    return found


def _enum_numbers(typed: validate_pb2.EnumRules, enum: EnumDescriptor) -> set[int]:
    allowed = {v.number for v in enum.values}
    if getattr(typed, "in"):
        allowed &= set(getattr(typed, "in"))
    allowed -= set(typed.not_in)
    if typed.HasField("const"):
        allowed &= {typed.const}
    return allowed


def _counts(typed: Message, *pairs: tuple[str, str]) -> dict[str, int]:
    return {keyword: getattr(typed, name) for name, keyword in pairs if typed.HasField(name)}
