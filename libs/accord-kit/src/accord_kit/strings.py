"""The rules every string of every request obeys, whatever its field: derived from descriptors.

They hold for each request message the boundary admits, so an RPC added to any contract
obeys them without a line of its own:

- no NUL (U+0000): PostgreSQL can store it neither in `text` nor in `jsonb`, so a NUL that
  got past the contract would end as INTERNAL at the first write (`string.no_nul`);
- ids are case-insensitive: a field whose rule is `string.uuid` is lowercased before the
  servicer sees it, so `0B4C…` and `0b4c…` name the same resource.

Other control characters are text PostgreSQL stores; fields that go into HTTP (header
values, URLs) refuse them with rules of their own in the contract.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from accord_kit.errors import FieldViolation
from buf.validate import validate_pb2

NO_NUL = "string.no_nul"
_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


@dataclass(frozen=True)
class _Field:
    name: str
    is_string: bool
    repeated: bool
    is_map: bool
    # For maps: whether the value is a message (keys are always scalars).
    map_value_message: bool
    uuid: bool


def _is_uuid(field: FieldDescriptor) -> bool:
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return False
    rules = options.Extensions[validate_pb2.field]
    return rules.HasField("string") and rules.string.uuid


@cache
def _plan(descriptor: Descriptor) -> tuple[_Field, ...]:
    """The fields of a message type that carry strings, directly or in nested messages."""
    found: list[_Field] = []
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            carries = _STRING in (key.type, value_field.type) or (
                value_field.type == _MESSAGE and _carries(value_field.message_type)
            )
            if carries:
                found.append(
                    _Field(field.name, False, True, True, value_field.type == _MESSAGE, False)
                )
        elif field.type == _STRING:
            repeated = field.is_repeated
            found.append(_Field(field.name, True, repeated, False, False, _is_uuid(field)))
        elif field.type == _MESSAGE and _carries(field.message_type):
            repeated = field.is_repeated
            found.append(_Field(field.name, False, repeated, False, False, False))
    return tuple(found)


@cache
def _carries(descriptor: Descriptor) -> bool:
    """Whether any string can sit anywhere inside this message type."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in seen:
            continue  # recursive types (google.protobuf.Value) are read once
        seen.add(current.full_name)
        for field in current.fields:
            if field.type == _STRING:
                return True
            if field.message_type is not None:
                pending.append(field.message_type)
    return False


def check(message: Message, prefix: str = "") -> list[FieldViolation]:
    """Lowercase every UUID-ruled id in place; return a violation for every string with NUL."""
    return list(_walk(message, prefix))


def _walk(message: Message, prefix: str) -> Iterator[FieldViolation]:
    for field in _plan(message.DESCRIPTOR):
        path = prefix + field.name
        value = getattr(message, field.name)
        if field.is_map:
            yield from _walk_map(field, value, path)
        elif field.is_string and field.repeated:
            for index, item in enumerate(value):
                if "\x00" in item:
                    yield _nul(f"{path}[{index}]")
                elif field.uuid and item != item.lower():
                    value[index] = item.lower()
        elif field.is_string:
            if "\x00" in value:
                yield _nul(path)
            elif field.uuid and value != value.lower():
                setattr(message, field.name, value.lower())
        elif field.repeated:
            for index, item in enumerate(value):
                yield from _walk(item, f"{path}[{index}].")
        elif message.HasField(field.name):
            yield from _walk(value, path + ".")


def _walk_map(field: _Field, entries: Any, path: str) -> Iterator[FieldViolation]:
    for key in entries:
        entry = f"{path}[{json.dumps(key)}]"
        if isinstance(key, str) and "\x00" in key:
            yield _nul(entry, "key")
        item = entries[key]
        if field.map_value_message:
            yield from _walk(item, entry + ".")
        elif isinstance(item, str) and "\x00" in item:
            yield _nul(entry, "value")


def _nul(path: str, part: str = "") -> FieldViolation:
    what = f"map {part}" if part else "value"
    return FieldViolation(path, f"{what} must not contain NUL (U+0000)", NO_NUL)
