"""The rules every request obeys whatever its fields, derived from the descriptors.

They hold for each request message the boundary admits, so an RPC added to any contract
obeys them without a line of its own:

- no string carries NUL (U+0000): PostgreSQL stores it neither in `text` nor in `jsonb`,
  so a NUL that got past the contract would end as INTERNAL at the first write
  (`string.no_nul`);
- every Duration and Timestamp is one protobuf defines (durations within ±10,000 years,
  times from year 1 to 9999, nanos in range and of the seconds' sign): anything else
  cannot be converted, by protovalidate or by the servicer (`duration.valid`,
  `timestamp.valid`);
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
DURATION = "duration.valid"
TIMESTAMP = "timestamp.valid"
_MAX_DURATION_SECONDS = 315_576_000_000
_MAX_NANOS = 999_999_999
_MIN_TIME_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_TIME_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
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
    """The fields of a message type that carry strings or times, directly or nested."""
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
    """Whether any string, duration or timestamp can sit anywhere inside this type."""
    seen: set[str] = set()
    pending = [descriptor]
    while pending:
        current = pending.pop()
        if current.full_name in seen:
            continue  # recursive types (google.protobuf.Value) are read once
        seen.add(current.full_name)
        if current.full_name in _TIMES:
            return True
        for field in current.fields:
            if field.type == _STRING:
                return True
            if field.message_type is not None:
                pending.append(field.message_type)
    return False


def check(message: Message, prefix: str = "") -> list[FieldViolation]:
    """A violation for every string with NUL and every invalid duration or timestamp;
    every UUID-ruled id is lowercased in place."""
    return list(_walk(message, prefix))


def _walk(message: Message, prefix: str) -> Iterator[FieldViolation]:
    time = _TIMES.get(message.DESCRIPTOR.full_name)
    if time is not None:
        problem = time(message)
        if problem is not None:
            yield FieldViolation(prefix.removesuffix("."), problem[1], problem[0])
        return
    for field in _plan(message.DESCRIPTOR):
        path = prefix + field.name
        value = getattr(message, field.name)
        if field.is_map:
            yield from _walk_map(field, value, path)
        elif field.is_string:
            yield from _walk_string(field, message, value, path)
        elif field.repeated:
            for index, item in enumerate(value):
                yield from _walk(item, f"{path}[{index}].")
        elif message.HasField(field.name):
            yield from _walk(value, path + ".")


def _walk_string(
    field: _Field, message: Message, value: Any, path: str
) -> Iterator[FieldViolation]:
    if field.repeated:
        for index, item in enumerate(value):
            if "\x00" in item:
                yield _nul(f"{path}[{index}]")
            elif field.uuid and item != item.lower():
                value[index] = item.lower()
    elif "\x00" in value:
        yield _nul(path)
    elif field.uuid and value != value.lower():
        setattr(message, field.name, value.lower())


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


def _duration(value: Any) -> tuple[str, str] | None:
    seconds, nanos = value.seconds, value.nanos
    if (
        abs(seconds) <= _MAX_DURATION_SECONDS
        and abs(nanos) <= _MAX_NANOS
        and not (seconds > 0 > nanos or seconds < 0 < nanos)
    ):
        return None
    return DURATION, "must be a valid duration: within ±315576000000 s, nanos of the same sign"


def _timestamp(value: Any) -> tuple[str, str] | None:
    if _MIN_TIME_SECONDS <= value.seconds <= _MAX_TIME_SECONDS and 0 <= value.nanos <= _MAX_NANOS:
        return None
    return TIMESTAMP, "must be a valid time, from 0001-01-01 to 9999-12-31 UTC"


_TIMES = {"google.protobuf.Duration": _duration, "google.protobuf.Timestamp": _timestamp}


def _nul(path: str, part: str = "") -> FieldViolation:
    what = f"map {part}" if part else "value"
    return FieldViolation(path, f"{what} must not contain NUL (U+0000)", NO_NUL)
