"""Settings helpers: connection URLs never carry their passwords into logs."""

from __future__ import annotations

import pytest

from accord_kit.config import redacted


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
