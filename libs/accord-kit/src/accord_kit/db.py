"""The async SQLAlchemy engine, a health check for it, and the Alembic runner.

Each service owns one Postgres schema: its tables, its outbox and its Alembic version
table all live there, so services can share a database without sharing state.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from accord_kit.config import asyncpg_url

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def metadata(schema: str) -> MetaData:
    """A MetaData bound to a service's schema with Accord's constraint naming."""
    return MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"timeout": 5, "command_timeout": 30},
    )


async def read_pool(url: str, *, size: int = 4) -> asyncpg.Pool:
    """Plain asyncpg connections for hot reads of one statement each: a read is one round trip,
    where a session's is four or more (pre-ping in a transaction, BEGIN, the statement,
    ROLLBACK). Nothing is reset on release, so the statements must leave no session state.
    Connections open on first use (a service starts with the database down) and one the
    server closed is replaced when next acquired."""

    async def keep(_: asyncpg.Connection) -> None:
        return None

    plain = asyncpg_url(url).replace("postgresql+asyncpg://", "postgresql://", 1)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        plain, min_size=0, max_size=size, reset=keep, timeout=5, command_timeout=30
    )
    return pool


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def database_check(engine: AsyncEngine):  # type: ignore[no-untyped-def]
    """Health check: one round trip to Postgres."""

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def migrate(url: str, migrations: Path, schema: str) -> None:
    """Upgrade a service's schema to head. Synchronous: run it before serving."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["url"] = asyncpg_url(url)
    config.attributes["schema"] = schema
    command.upgrade(config, "head")
