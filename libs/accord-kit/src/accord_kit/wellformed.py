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
import uuid
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
def _plan(descriptor: Descriptor) -> dict[str, _Field]:
    """The fields of a message type that carry strings or times, directly or nested."""
    found: dict[str, _Field] = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            carries = _STRING in (key.type, value_field.type) or (
                value_field.type == _MESSAGE and _carries(value_field.message_type)
            )
            if carries:
                message_value = value_field.type == _MESSAGE
                found[field.name] = _Field(field.name, False, True, True, message_value, False)
        elif field.type == _STRING:
            repeated = field.is_repeated
            found[field.name] = _Field(field.name, True, repeated, False, False, _is_uuid(field))
        elif field.type == _MESSAGE and _carries(field.message_type):
            found[field.name] = _Field(field.name, False, field.is_repeated, False, False, False)
    return found


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


# A broken value: its path below the message walked ("" for the message itself), what is
# wrong, and the rule id. Paths are only built for broken values: the common case, a
# request with nothing wrong, allocates nothing.
Broken = tuple[str, str, str]
_NONE: list[Broken] = []  # shared and never appended to


def resource_id(value: str) -> str | None:
    """A server-assigned id in its one spelling (a lower-case UUID), or None when `value`
    is not one: for ids inside a resource an update sends whole, which the contract's
    rules skip (only the masked fields are read)."""
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        return None
    return canonical if canonical == value.lower() else None


def check(message: Message, prefix: str = "") -> list[FieldViolation]:
    """A violation for every string with NUL and every invalid duration or timestamp;
    every UUID-ruled id is lowercased in place."""
    return [FieldViolation(prefix + path, what, rule) for path, what, rule in _walk(message)]


def _walk(message: Message) -> list[Broken]:
    name = message.DESCRIPTOR.full_name
    if name in _JSON:
        return _walk_json(message, name)
    time = _TIMES.get(name)
    if time is not None:
        problem = time(message)
        return [("", problem[1], problem[0])] if problem is not None else _NONE
    plan = _plan(message.DESCRIPTOR)
    found = _NONE
    for descriptor, value in message.ListFields():
        field = plan.get(descriptor.name)
        if field is None:
            continue
        if field.is_map:
            broken = _walk_map(field, value)
        elif field.is_string:
            broken = _walk_string(field, message, value)
        elif field.repeated:
            broken = _NONE
            for index, item in enumerate(value):
                if inner := _walk(item):
                    broken = broken + _under(f"[{index}]", inner)
        else:
            broken = _walk(value)
        if broken:
            found = found + _under(field.name, broken)
    return found


def _under(name: str, broken: list[Broken]) -> list[Broken]:
    """`broken` as seen from the message that holds them under `name`."""
    return [
        (name + ("" if not path else path if path[0] == "[" else "." + path), what, rule)
        for path, what, rule in broken
    ]


def _walk_string(field: _Field, message: Message, value: Any) -> list[Broken]:
    if not field.repeated:
        if "\x00" in value:
            return [_nul("")]
        if field.uuid and value != value.lower():
            setattr(message, field.name, value.lower())
        return _NONE
    found = _NONE
    for index, item in enumerate(value):
        if "\x00" in item:
            found = [*found, _nul(f"[{index}]")]
        elif field.uuid and item != item.lower():
            value[index] = item.lower()
    return found


def _walk_map(field: _Field, entries: Any) -> list[Broken]:
    found = _NONE
    for key, item in entries.items():
        if isinstance(key, str) and "\x00" in key:
            found = [*found, _nul(_entry(key), "key")]
        if field.map_value_message:
            if inner := _walk(item):
                found = found + _under(_entry(key), inner)
        elif isinstance(item, str) and "\x00" in item:
            found = [*found, _nul(_entry(key), "value")]
    return found


_JSON = ("google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue")


def _walk_json(message: Any, name: str) -> list[Broken]:
    """google.protobuf.Value and its kin (task results are made of them), walked directly:
    the same rules, without the generic walk's per-node cost."""
    if name == "google.protobuf.Struct":
        found = _NONE
        for key, item in message.fields.items():
            if "\x00" in key:
                found = [*found, _nul(_entry(key), "key")]
            if inner := _walk_json(item, "google.protobuf.Value"):
                found = found + _under(_entry(key), inner)
        return _under("fields", found) if found else _NONE
    if name == "google.protobuf.ListValue":
        found = _NONE
        for index, item in enumerate(message.values):
            if inner := _walk_json(item, "google.protobuf.Value"):
                found = found + _under(f"[{index}]", inner)
        return _under("values", found) if found else _NONE
    kind = message.WhichOneof("kind")
    if kind == "string_value":
        return [_under("string_value", [_nul("")])[0]] if "\x00" in message.string_value else _NONE
    if kind == "struct_value":
        inner = _walk_json(message.struct_value, "google.protobuf.Struct")
        return _under("struct_value", inner) if inner else _NONE
    if kind == "list_value":
        inner = _walk_json(message.list_value, "google.protobuf.ListValue")
        return _under("list_value", inner) if inner else _NONE
    return _NONE


def _entry(key: object) -> str:
    return f"[{json.dumps(key)}]" if isinstance(key, str) else f"[{key}]"


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


def _nul(path: str, part: str = "") -> Broken:
    what = f"map {part}" if part else "value"
    return path, f"{what} must not contain NUL (U+0000)", NO_NUL


# What a server sends another server may carry text read off the web. `scrub` makes such a
# message obey the same rules before it goes, so one NUL in a page, or one overlong error,
# cannot get a whole report refused.
REPLACEMENT = "\ufffd"


def scrub(message: Message) -> None:
    """In place: every NUL becomes U+FFFD and every string is cut to its field's `max_len`."""
    name = message.DESCRIPTOR.full_name
    if name in _JSON:
        _scrub_json(message, name)
        return
    for field, value in message.ListFields():
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            _scrub_map(entry, value)
        elif field.type == _STRING:
            limit = _max_len(field)
            if field.is_repeated:
                for index, item in enumerate(value):
                    value[index] = _clean(item, limit)
            else:
                setattr(message, field.name, _clean(value, limit))
        elif field.type == _MESSAGE:
            for item in value if field.is_repeated else (value,):
                scrub(item)


def _clean(text: str, limit: int | None) -> str:
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    return text[:limit] if limit is not None and len(text) > limit else text


@cache
def _max_len(field: FieldDescriptor) -> int | None:
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules = options.Extensions[validate_pb2.field]
    string = rules.repeated.items.string if field.is_repeated else rules.string
    return string.max_len if string.HasField("max_len") else None


def _scrub_map(entry: Descriptor, entries: Any) -> None:
    value_field = entry.fields_by_name["value"]
    for key in [k for k in entries if isinstance(k, str) and "\x00" in k]:
        clean = key.replace("\x00", REPLACEMENT)
        if value_field.type == _MESSAGE:
            entries[clean].CopyFrom(entries[key])
        else:
            entries[clean] = entries[key]
        del entries[key]
    for key in list(entries):
        if value_field.type == _MESSAGE:
            scrub(entries[key])
        elif value_field.type == _STRING:
            entries[key] = _clean(entries[key], None)


def _scrub_json(message: Any, name: str) -> None:
    if name == "google.protobuf.Struct":
        for key in [k for k in message.fields if "\x00" in k]:
            message.fields[key.replace("\x00", REPLACEMENT)].CopyFrom(message.fields[key])
            del message.fields[key]
        for item in message.fields.values():
            _scrub_json(item, "google.protobuf.Value")
    elif name == "google.protobuf.ListValue":
        for item in message.values:
            _scrub_json(item, "google.protobuf.Value")
    else:
        kind = message.WhichOneof("kind")
        if kind == "string_value" and "\x00" in message.string_value:
            message.string_value = message.string_value.replace("\x00", REPLACEMENT)
        elif kind == "struct_value":
            _scrub_json(message.struct_value, "google.protobuf.Struct")
        elif kind == "list_value":
            _scrub_json(message.list_value, "google.protobuf.ListValue")
