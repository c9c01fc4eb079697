"""What every bench script shares: signed client tokens, a work directory, progress lines."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from accord_kit import tokens
from accord_kit.auth import bearer

SCOPES = ("jobs:read", "jobs:write", "policies:admin", "policies:evaluate")


@functools.cache
def metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    """A client of `tenant`: a token signed with the running stack's dev key."""
    key = tokens.read_private_key(Path(os.environ["ACCORD_AUTH_SIGNING_KEY_FILE"]))
    token = tokens.issue(
        key, subject=f"bench:{tenant}", tenant=tenant, scopes=SCOPES, ttl=timedelta(hours=12)
    )
    return bearer(token)


@contextlib.contextmanager
def workdir(path: Path | None) -> Iterator[Path]:
    """`path` (kept afterwards), or a temporary directory removed on the way out."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="accord-bench-", ignore_cleanup_errors=True) as tmp:
        yield Path(tmp)


def phase(message: str) -> None:
    """A timestamped progress line on stderr; the figures go to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
