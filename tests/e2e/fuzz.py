"""Hostile requests for any RPC, built from its descriptor: what the fuzz test sends.

Every field gets values from the edges: NUL and other control characters, huge and empty
strings, undefined enum values, extreme numbers, out-of-range times, malformed URLs and
forged page tokens. Every URL and host named is loopback (or no host at all), so whatever
a fuzzed policy allows, nothing leaves the machine.
"""

from __future__ import annotations

import base64
import json
import math
import random
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_PAGE_TOKENS = [
    _token(json.dumps({"p": [], "f": "0" * 16}).encode()),
    _token(json.dumps({"p": ["nope", "x"], "f": "0" * 16}).encode()),
    _token(json.dumps({"p": [2**63], "f": "0" * 16}).encode()),
    _token(b"\x01" + json.dumps(["nope", "x"]).encode() + bytes(16)),
    _token(b"\x01" + json.dumps([2**63]).encode() + bytes(16)),
    _token(b"\x01"),
    "%%%",
    "A" * 512,
]
STRINGS = [
    "",
    "a",
    "\x00",
    "a\x00b",
    "\x01\x02\x1b[31m\x7f",
    "\r\nX-Injected: 1",
    "\u202e\ufeff\U0001f600",
    "x" * 100_000,
    "a" * 129,
    "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a",
    "0B4C1F2E-6D5A-4E3B-9C8D-7F6E5D4C3B2A",
    "not-a-uuid",
    "http://127.0.0.1:1/",
    "http://127.0.0.1:99999/",
    "http://[::1",
    "https://127.0.0.1/\x00",
    "http://127.0.0.1:1/{{ steps.nope }}",
    "ftp://127.0.0.1/",
    "javascript:alert(1)",
    "http://",
    "{{ steps.nope }}",
    "{{",
    "*",
    "*.",
    "127.0.0.1",
    "127.0.0.1/33",
    "::1/129",
    "* * * * *",
    "0 0 31 2 *",
    "FREQ=SECONDLY;COUNT=1",
    "Mars/Phobos",
    "UTC",
    "'; DROP TABLE jobs; --",
    "%s%n%x",
    "div >>> [",
    "GET",
    "display_name",
    "rules.nope",
    *FORGED_PAGE_TOKENS,
]
INT32 = [0, 1, -1, 99, 1001, 2**31 - 1, -(2**31)]
INT64 = [*INT32, 2**63 - 1, -(2**63)]
UINT32 = [0, 1, 2**32 - 1]
UINT64 = [0, 1, 2**64 - 1]
DOUBLES = [0.0, -0.0, 0.5, 1.0, 10.5, math.nan, math.inf, -math.inf, 1e308, 5e-324]
BYTES = [b"", b"\x00", b"\xff\xfe", b"x" * (1 << 20 | 1)]
SECONDS = [-1, 0, 1, 59, 3601, 315_576_000_000, 315_576_000_001]
TIMESTAMPS = [-62_135_596_801, -62_135_596_800, 0, 1_800_000_000, 253_402_300_799, 253_402_300_800]
NANOS = [0, 999_999_999, 1_000_000_000, -1]

_INTS = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}


def scalar(field: FieldDescriptor, rng: random.Random) -> Any:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return rng.choice(STRINGS)
    if kind == FieldDescriptor.TYPE_BYTES:
        return rng.choice(BYTES)
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind == FieldDescriptor.TYPE_ENUM:
        return rng.choice([*(v.number for v in field.enum_type.values), 99, -1, 2**31 - 1])
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice(DOUBLES)
    return rng.choice(_INTS[kind])


def _well_known(message: Message, rng: random.Random) -> bool:
    name = message.DESCRIPTOR.full_name
    if name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        pool = SECONDS if name.endswith("Duration") else TIMESTAMPS
        message.seconds = rng.choice(pool)  # type: ignore[attr-defined]
        message.nanos = rng.choice(NANOS)  # type: ignore[attr-defined]
        return True
    if name == "google.protobuf.FieldMask":
        message.paths.extend(rng.sample(STRINGS[:40], rng.choice([0, 1, 2])))  # type: ignore[attr-defined]
        return True
    return False


def fill(message: Message, rng: random.Random, depth: int = 0, density: float = 0.6) -> None:
    """Set a random subset of the message's fields, recursively, to hostile values."""
    if _well_known(message, rng):
        return
    for field in message.DESCRIPTOR.fields:
        if rng.random() > density:
            continue
        set_field(message, field, rng, depth)


def set_field(message: Message, field: FieldDescriptor, rng: random.Random, depth: int) -> None:
    target = field.message_type
    value = getattr(message, field.name)
    if target is not None and target.GetOptions().map_entry:
        key_field, value_field = target.fields_by_name["key"], target.fields_by_name["value"]
        for _ in range(rng.choice([1, 2, 40])):
            key = scalar(key_field, rng)
            if value_field.message_type is None:
                value[key] = scalar(value_field, rng)
            elif depth < 3:
                fill(value[key], rng, depth + 1)
    elif field.is_repeated:
        for _ in range(rng.choice([1, 2, 3] if target is not None else [1, 3, 1001])):
            if target is None:
                value.append(scalar(field, rng))
            elif depth < 3:
                fill(value.add(), rng, depth + 1)
    elif target is not None:
        if depth < 3:
            fill(value, rng, depth + 1)
            value.SetInParent()
    else:
        setattr(message, field.name, scalar(field, rng))


def mutate(seed: Message, rng: random.Random) -> Message:
    """A copy of a valid request with one field, somewhere inside it, made hostile."""
    message = type(seed)()
    message.CopyFrom(seed)
    current = message
    for _ in range(4):
        nested = [
            f
            for f, _ in current.ListFields()
            if f.message_type is not None and not f.is_repeated and not _is_leaf(f.message_type)
        ]
        if not nested or rng.random() < 0.4:
            break
        current = getattr(current, rng.choice(nested).name)
    steps = getattr(current, "steps", None)
    if steps and rng.random() < 0.5:
        current = rng.choice(list(steps))
        actions = [f for f, _ in current.ListFields() if f.message_type is not None]
        current = getattr(current, rng.choice(actions).name) if actions else current
    field = rng.choice(current.DESCRIPTOR.fields)
    current.ClearField(field.name)
    set_field(current, field, rng, depth=2)
    return message


def _is_leaf(descriptor: Descriptor) -> bool:
    return descriptor.full_name.startswith("google.protobuf.")
