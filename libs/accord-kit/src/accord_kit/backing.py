"""The PostgreSQL engine and NATS connection a stateful service runs on, and their health."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from accord_kit import db
from accord_kit import nats as knats
from accord_kit.server import Server

CLOSE_SECONDS = 5.0


@dataclass(frozen=True)
class Backing:
    engine: AsyncEngine
    nc: knats.Connection

    @classmethod
    async def open(
        cls, database_url: str, nats_url: str, name: str, *, pool_size: int = 10
    ) -> Backing:
        engine = db.create_engine(database_url, pool_size=pool_size)
        return cls(engine, await knats.connect(nats_url, name))

    async def serve_with(self, server: Server) -> None:
        """The server is SERVING only while both Postgres and NATS answer."""
        server.check("postgres", db.database_check(self.engine))
        await server.use_nats(self.nc)

    async def close(self) -> None:
        """Close both, each within a bound: a shutdown never hangs on a dependency."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.nc.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await self.engine.dispose()
