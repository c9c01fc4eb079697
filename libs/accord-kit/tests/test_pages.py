"""Page tokens: sealed with the server's key, bound to tenant and filters, every field checked."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from accord_kit import caller, pages
from accord_kit.auth import Principal
from accord_kit.errors import InvalidArgument

KEY = b"k" * 32
ID = "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a"
WHEN = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).isoformat()
SHAPE = (pages.TIME, pages.UUID)
FILTERS: Any = {"states": [2], "engine": 1}


@contextlib.contextmanager
def serving(tenant: str | None = "acme", key: bytes = KEY) -> Iterator[None]:
    """As the boundary binds them for one call: the caller and the server's key."""
    bound = caller.bind(Principal("user", tenant, frozenset(), is_service=False))
    sealed = pages.bind(key)
    try:
        yield
    finally:
        pages.unbind(sealed)
        caller.unbind(bound)


def refused(token: str, filters: Any = FILTERS, shape: Any = SHAPE) -> str:
    with pytest.raises(InvalidArgument) as raised:
        pages.decode(token, filters, shape=shape)
    [violation] = raised.value.violations
    assert violation.field == "page_token"
    return violation.description


def test_a_token_resumes_where_it_was_issued() -> None:
    with serving():
        token = pages.encode([WHEN, ID], FILTERS)
        assert pages.decode(token, FILTERS, shape=SHAPE) == [WHEN, ID]
        assert pages.decode("", FILTERS, shape=SHAPE) is None


def test_a_token_for_other_filters_another_tenant_or_another_key_is_refused() -> None:
    with serving():
        token = pages.encode([WHEN, ID], FILTERS)
        assert "this query" in refused(token, {"states": [3], "engine": 1})
    with serving(tenant="globex"):
        assert "this query" in refused(token)
    with serving(key=b"another key"):
        assert "this query" in refused(token)


def test_an_edited_truncated_or_made_up_token_is_refused() -> None:
    with serving():
        token = pages.encode([WHEN, ID], FILTERS)
        raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw[5] ^= 1
        edited = base64.urlsafe_b64encode(bytes(raw)).decode()
        for forged in (edited, token[:-4], token[:10], "%%%", "garbage", "x", "AAAA"):
            refused(forged)


@pytest.mark.parametrize(
    ("position", "shape"),
    [
        ([], SHAPE),
        (["nope", "x"], SHAPE),
        ([WHEN], SHAPE),
        ([WHEN, ID, ID], SHAPE),
        ([WHEN, ID.upper()], SHAPE),
        (["2026-11-29T12:00:00", ID], SHAPE),  # no time zone
        ([WHEN, 7], SHAPE),
        ([2**63], (pages.INDEX,)),
        ([-1], (pages.INDEX,)),
        ([True], (pages.INDEX,)),
        (["3"], (pages.INDEX,)),
    ],
)
def test_a_genuine_token_whose_position_lacks_the_lists_shape_is_refused(
    position: list[Any], shape: Any
) -> None:
    """What a token of another release, or another list, would carry: never reaches SQL."""
    with serving():
        assert "another release" in refused(pages.encode(position, FILTERS), shape=shape)


def test_the_largest_index_is_a_position() -> None:
    with serving():
        token = pages.encode([2**63 - 1], FILTERS)
        assert pages.decode(token, FILTERS, shape=(pages.INDEX,)) == [2**63 - 1]
