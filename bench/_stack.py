"""The stack the benchmarks measure: the kit's launcher with the benchmarks' settings.

Uses ACCORD_DATABASE_URL / ACCORD_NATS_URL when set; otherwise starts embedded servers in the
work directory. Everything started here is stopped on the way out, error or Ctrl-C alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from accord_cli.auth import dev_credentials
from accord_kit.stack import SERVICES, Stack, StackError

__all__ = ["SERVICES", "Stack", "StackError", "running_stack", "start_service", "stop_service"]


@contextlib.asynccontextmanager
async def running_stack(
    workdir: Path, settings: Mapping[str, str], replicas: Mapping[str, int] | None = None
) -> AsyncIterator[Stack]:
    """Start everything, yield the stack once every service is SERVING, then stop it all.

    `settings` are extra environment variables for the services (ACCORD_<SVC>_...).
    """
    env = dict(os.environ) | dev_credentials(workdir).env
    # Clients of the bench sign their tokens with the stack's dev key, as `accord auth` does.
    os.environ["ACCORD_AUTH_SIGNING_KEY_FILE"] = env["ACCORD_AUTH_SIGNING_KEY_FILE"]
    # Throughput is measured here, not throttling: one tenant's clients share a principal.
    for name in SERVICES:
        env.setdefault(f"ACCORD_{name.upper()}_RATE_LIMIT", "1000000")
        env.setdefault(f"ACCORD_{name.upper()}_RATE_LIMIT_BURST", "1000000")
    # A NATS server given from outside may be shared: a durable of our own sees our events.
    env.setdefault("ACCORD_AUDIT_DURABLE_NAME", f"audit-bench-{os.getpid()}")
    async with Stack(workdir, env=env | dict(settings), replicas=replicas).running() as stack:
        yield stack


async def stop_service(stack: Stack, name: str, replica: int = 0) -> None:
    """Stop one service (SIGTERM, then SIGKILL); `start_service` brings it back."""
    await asyncio.to_thread(stack.stop_service, name, replica)


async def start_service(stack: Stack, name: str, replica: int = 0) -> None:
    """Start one service again on its old ports and wait until it is SERVING."""
    await asyncio.to_thread(stack.start_service, name, replica)
