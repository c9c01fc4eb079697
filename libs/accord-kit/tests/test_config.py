"""Settings helpers: connection URLs never carry their passwords into logs; an empty page
token key is no key."""

from __future__ import annotations

import pytest

from accord_kit.config import ServiceSettings, redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://accord:s3cret@db:5432/accord",
            "postgresql+asyncpg://accord:***@db:5432/accord",
        ),
        ("nats://user:p%40ss@nats:4222", "nats://user:***@nats:4222"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        (
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "postgresql://postgres@127.0.0.1:5432/postgres",
        ),
    ],
)
def test_passwords_are_redacted(url: str, shown: str) -> None:
    assert redacted(url) == shown


@pytest.mark.parametrize("given", ["", "  "])
def test_an_empty_page_token_key_is_no_key(given: str) -> None:
    assert ServiceSettings(page_token_key=given).page_token_key is None


def test_a_page_token_key_is_kept() -> None:
    key = ServiceSettings(page_token_key="k" * 32).page_token_key
    assert key is not None
    assert key.get_secret_value() == "k" * 32
