"""Settings every service shares; each service subclasses with its own ACCORD_<SVC>_ prefix.

The database and NATS URLs are suite-wide (ACCORD_DATABASE_URL, ACCORD_NATS_URL) but a
service-prefixed variable overrides them for that service alone.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
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

    # JWKS file of the Ed25519 keys tokens are verified with (suite-wide, reloaded on change).
    # Required unless auth_disabled: there is no default key.
    auth_keys_file: Path | None = Field(
        default=None, validation_alias=AliasChoices("auth_keys_file", "ACCORD_AUTH_KEYS_FILE")
    )
    # Run without authentication: every caller is an admin of the tenant it names.
    auth_disabled: bool = Field(
        default=False, validation_alias=AliasChoices("auth_disabled", "ACCORD_AUTH_DISABLED")
    )
    # Key page tokens are sealed with (HMAC-SHA256; suite-wide). Every replica of a service
    # needs the same key for a list to page across them; unset, each process draws its own,
    # and a token is then refused (INVALID_ARGUMENT) by another replica or after a restart.
    page_token_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("page_token_key", "ACCORD_PAGE_TOKEN_KEY")
    )

    @field_validator("page_token_key", mode="before")
    @classmethod
    def _no_empty_key(cls, value: object) -> object:
        """An empty key (compose passes `${ACCORD_PAGE_TOKEN_KEY:-}`) is no key: never seal
        with the empty string."""
        return None if isinstance(value, str) and not value.strip() else value

    # Seconds a token is still accepted after it expires (suite-wide): the clock skew
    # allowed between whoever issues tokens and the services, 0 to 300. Default 5.
    token_leeway_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        validation_alias=AliasChoices("token_leeway_seconds", "ACCORD_TOKEN_LEEWAY_SECONDS"),
    )
    # This service's own token, for the calls it makes to other services.
    token_file: Path | None = None
    # Calls per second each principal may make on average, and its burst.
    rate_limit: float = Field(default=100.0, gt=0)
    rate_limit_burst: float = Field(default=200.0, ge=1)
    # The same for service tokens, which call on behalf of every tenant (burst: twice this).
    service_rate_limit: float = Field(default=5000.0, gt=0)
    # TLS for this service's port: certificate chain and key (PEM). Both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Require clients to present a certificate signed by this CA (mTLS).
    tls_client_ca_file: Path | None = None
    # CA that the services this one calls are verified against; set, calls use TLS.
    tls_ca_file: Path | None = None


def asyncpg_url(url: str) -> str:
    """Accept plain `postgresql://` URLs from operators; SQLAlchemy needs the driver named."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+asyncpg://" + url.removeprefix(plain)
    return url


def redacted(url: str) -> str:
    """A URL fit for logs and terminals: any password in it replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
