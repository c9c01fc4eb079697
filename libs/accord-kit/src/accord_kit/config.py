"""Settings every service shares; each service subclasses with its own ACCORD_<SVC>_ prefix.

The database and NATS URLs are suite-wide (ACCORD_DATABASE_URL, ACCORD_NATS_URL) but a
service-prefixed variable overrides them for that service alone.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def shared(name: str, default: str, *, prefix: str) -> str:
    """A field that reads ACCORD_<SVC>_<NAME> first, then the suite-wide ACCORD_<NAME>."""
    return Field(
        default=default,
        validation_alias=AliasChoices(f"{prefix}{name}", f"ACCORD_{name}"),
    )


class ServiceSettings(BaseSettings):
    """What the gRPC scaffold needs: where to listen and how to shut down."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    log_level: str = "info"
    log_format: str = Field(default="json", pattern="^(json|console)$")
    # Seconds in-flight RPCs get to finish after SIGTERM before they are cancelled.
    drain_seconds: float = 10.0
    # Seconds between dependency health checks.
    health_interval: float = 1.0


def asyncpg_url(url: str) -> str:
    """Accept plain `postgresql://` URLs from operators; SQLAlchemy needs the driver named."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url.removeprefix(plain)
    return url
