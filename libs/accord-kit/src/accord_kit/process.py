"""The shared `main()` of every service: `serve` (default) or `migrate`, then exit cleanly."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

import uvloop

from accord_kit import logs, tracing
from accord_kit.auth import ConfigError
from accord_kit.config import ServiceSettings
from accord_kit.server import wait_for_shutdown_signal


class App(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


S = TypeVar("S", bound=ServiceSettings)


def run_service(
    name: str,
    settings_type: type[S],
    app_type: Callable[[S], App],
    migrate: Callable[[S], None] | None = None,
) -> None:
    parser = argparse.ArgumentParser(
        prog=f"accord-{name}", description=f"The Accord {name} service."
    )
    commands = ["serve", "migrate"] if migrate else ["serve"]
    parser.add_argument("command", nargs="?", default="serve", choices=commands)
    args = parser.parse_args()
    settings = settings_type()
    logs.configure(settings.log_level, settings.log_format, name)
    if args.command == "migrate" and migrate is not None:
        migrate(settings)
        return
    try:
        # On when ACCORD_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT is set; an unknown
        # protocol is a configuration error, reported as one.
        tracing.configure(name)
        # uvloop: a faster event loop under gRPC, asyncpg and NATS alike.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve(lambda: app_type(settings)))
    except ConfigError as exc:
        print(f"accord-{name}: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        tracing.shutdown()


async def _serve(build: Callable[[], App]) -> None:
    app = build()  # inside the loop: grpc.aio binds its server to the running loop
    await app.start()
    try:
        await wait_for_shutdown_signal()
    finally:
        await app.stop()
