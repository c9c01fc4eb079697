"""Opaque page tokens: a keyset position, base64url-encoded JSON, bound to its filters.

A token from one query cannot be replayed against another: it carries a digest of the
filters it was issued for, and a mismatch is INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from accord_kit.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    return requested or DEFAULT_PAGE_SIZE


def _digest(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def encode(position: list[Any], filters: Any) -> str:
    raw = json.dumps({"p": position, "f": _digest(filters)}, default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str, filters: Any) -> list[Any] | None:
    """The position a token resumes from, or None for the first page."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position, digest = data["p"], data["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _invalid("page_token is malformed") from None
    if digest != _digest(filters) or not isinstance(position, list):
        raise _invalid("page_token was issued for different filters")
    return position


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument("request is invalid", [FieldViolation("page_token", description)])
