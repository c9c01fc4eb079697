"""Page tokens for every keyset-paged list: a position, sealed with the server's key.

A token is base64url(version ‖ position as JSON ‖ HMAC-SHA256 tag). The tag covers the
position, the caller's tenant and the list's filters, so a token is only accepted by the
query that issued it, for the tenant it was issued to, by servers sharing the key
(`page_token_key`). Anything else - edited, truncated, forged, issued for other filters or
another tenant or under another key - is INVALID_ARGUMENT, and so is a genuine tag over a
position whose fields do not have the list's shape (every field is checked: a token of an
older release cannot reach SQL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar, Token
from datetime import datetime
from typing import Any

from accord_kit import caller
from accord_kit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100
_VERSION = b"\x01"
_TAG_BYTES = 16
_MAX_INDEX = 2**63 - 1

Kind = Callable[[Any], bool]
"""Whether one position field, as decoded from JSON, has the kind the list expects."""


def _is_time(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _is_key(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256 and "\x00" not in value


def _is_index(value: Any) -> bool:
    return type(value) is int and 0 <= value <= _MAX_INDEX


TIME: Kind = _is_time
"""A timezone-aware ISO 8601 time, as `datetime.isoformat()` writes it."""
UUID: Kind = _is_uuid
"""A UUID in its canonical lower-case spelling."""
INDEX: Kind = _is_index
"""A non-negative 64-bit integer."""
KEY: Kind = _is_key
"""A non-empty string of up to 256 characters: a name or an id that is not a UUID."""

# The key tokens are sealed with, bound by the boundary for each call. Outside a call (a
# service's own tests of its use cases), a key of this process seals and opens them.
_key: ContextVar[bytes] = ContextVar("accord_page_token_key")
_process_key = secrets.token_bytes(32)


def bind(key: bytes) -> Token[bytes]:
    return _key.set(key)


def unbind(token: Token[bytes]) -> None:
    _key.reset(token)


def page_size(requested: int) -> int:
    return requested or DEFAULT_PAGE_SIZE


def _tag(payload: bytes, filters: Any) -> bytes:
    principal = caller.current()
    bound = json.dumps(
        [principal.tenant if principal else None, filters], sort_keys=True, default=str
    )
    mac = hmac.new(_key.get(_process_key), digestmod=hashlib.sha256)
    mac.update(hashlib.sha256(bound.encode()).digest())
    mac.update(payload)
    return mac.digest()[:_TAG_BYTES]


def encode(position: Sequence[Any], filters: Any) -> str:
    """The token that resumes after `position` for this tenant's query with `filters`."""
    payload = _VERSION + json.dumps(list(position), separators=(",", ":")).encode()
    raw = payload + _tag(payload, filters)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, filters: Any, *, shape: Sequence[Kind]) -> list[Any] | None:
    """The position a token resumes from, or None for the first page.

    `shape` is the kind of each position field, in order (e.g. `(TIME, UUID)`).
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        raise _invalid("page_token is not a token this server issued") from None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if len(raw) <= _TAG_BYTES + 1 or not hmac.compare_digest(tag, _tag(payload, filters)):
        raise _invalid(
            "page_token was not issued by this server for this query (its filters and "
            "tenant must be the same as the first page's)"
        )
    try:
        position = json.loads(payload[1:]) if payload[:1] == _VERSION else None
    except ValueError:
        position = None
    if (
        not isinstance(position, list)
        or len(position) != len(shape)
        or not all(kind(value) for kind, value in zip(shape, position, strict=True))
    ):
        raise _invalid("page_token is from another release; list again from the first page")
    return position


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument("request is invalid", [FieldViolation("page_token", description)])
