"""Who may call what: authentication, scopes per RPC, acting tenant, per-principal rate limits.

Every `accord.*` RPC declares its scope with the `accord.common.v1.required_scope` method
option next to its definition; `required_scope` reads it from the descriptors, so the proto
files are the one table. The boundary interceptor calls `Authenticator.admit` before the
request is validated or any servicer code runs.

A tenant token acts for its own tenant only. A service token (tenant `*`) acts for the
tenant named in the `accord-tenant` metadata, which is how services call each other on a
tenant's behalf. With auth disabled (an explicit operator choice) every caller is an
anonymous admin of the tenant in `accord-tenant`, or of `default`.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from accord.common.v1 import auth_pb2
from accord_kit.config import ServiceSettings
from accord_kit.errors import (
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from accord_kit.revocations import Revocations
from accord_kit.tokens import (
    ALL_SCOPES,
    DEFAULT_LEEWAY,
    Claims,
    KeySet,
    TokenError,
    WatchedFile,
    verify,
)

AUTHORIZATION = "authorization"
TENANT_METADATA = "accord-tenant"
# Who a service's call is on behalf of: the subject of the call it is serving, so events
# name the user who caused them through every hop. Read from service tokens only.
ACTOR_METADATA = "accord-actor"
_ACTOR = re.compile(r"^[\x20-\x7e]{1,256}$")
DEFAULT_TENANT = "default"
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_CACHE_LIMIT = 10_000


class ConfigError(Exception):
    """The service cannot start as configured; the message says what to set."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one RPC and the tenant it acts for (None: no tenant)."""

    subject: str
    tenant: str | None
    scopes: frozenset[str]
    is_service: bool
    token_id: str = ""
    # For a service token: the subject it calls on behalf of (ACTOR_METADATA), if any.
    on_behalf_of: str = ""

    @property
    def actor(self) -> str:
        """Who caused the call: the user a service acts for, else the caller itself."""
        return self.on_behalf_of or self.subject

    @property
    def rate_key(self) -> str:
        return f"{self.subject}@{self.tenant or '*'}" if not self.is_service else self.subject


@functools.cache
def method_descriptor(method: str) -> MethodDescriptor | None:
    """`/accord.x.v1.Service/Method` to its descriptor, if its module is loaded."""
    service, _, name = method.lstrip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindServiceByName(service)
    except KeyError:
        return None
    return found.methods_by_name.get(name)


def required_scope(method: str) -> str | None:
    descriptor = method_descriptor(method)
    if descriptor is None:
        return None
    scope: str = descriptor.GetOptions().Extensions[auth_pb2.required_scope]
    return scope or None


class RateLimiter:
    """A token bucket per principal: `rate` calls a second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one call; 0 when allowed, else the seconds until one is."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) >= _CACHE_LIMIT and key not in self._buckets:
            self._prune(now)
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _prune(self, now: float) -> None:
        # Buckets that have refilled carry no state worth keeping.
        full = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}


Metadata = Iterable[tuple[str, str | bytes]]


def _metadata(metadata: Metadata | None, key: str) -> str | None:
    for k, value in metadata or ():
        if k == key:
            return value if isinstance(value, str) else value.decode()
    return None


def _tenant(value: str) -> str:
    if not _TENANT.match(value):
        raise InvalidArgument(
            "tenant is invalid",
            [FieldViolation(TENANT_METADATA, "must match [a-z0-9][a-z0-9_-]{0,62}")],
        )
    return value


class Authenticator:
    """Turns call metadata into a Principal, or refuses the call with the right status."""

    def __init__(
        self,
        keys: KeySet | None,
        revocations: Revocations,
        limiter: RateLimiter,
        service_limiter: RateLimiter,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        self.keys = keys
        self.leeway = leeway
        self.revocations = revocations
        self._limiter = limiter
        self._service_limiter = service_limiter
        self._verified: dict[str, Claims] = {}

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Authenticator:
        keys = None
        if not settings.auth_disabled:
            if settings.auth_keys_file is None:
                raise ConfigError(
                    "no token verification keys: set ACCORD_AUTH_KEYS_FILE to a JWKS file, "
                    "or ACCORD_AUTH_DISABLED=true to run without authentication"
                )
            try:
                keys = KeySet(Path(settings.auth_keys_file))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load ACCORD_AUTH_KEYS_FILE: {exc}") from exc
        return cls(
            keys,
            Revocations(),
            RateLimiter(settings.rate_limit, settings.rate_limit_burst),
            RateLimiter(settings.service_rate_limit, settings.service_rate_limit * 2),
            settings.token_leeway_seconds,
        )

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def admit(self, method: str, metadata: Metadata | None) -> Principal:
        """Authenticate, check the method's scope, rate-limit; the caller's Principal."""
        principal = self._authenticate(metadata)
        scope = required_scope(method)
        if scope is None:
            raise PermissionDenied(f"{method} declares no scope and cannot be called")
        if scope not in principal.scopes:
            raise PermissionDenied(
                f"token lacks the `{scope}` scope this method needs",
                metadata={"required_scope": scope},
            )
        limiter = self._service_limiter if principal.is_service else self._limiter
        wait = limiter.take(principal.rate_key)
        if wait > 0:
            raise ResourceExhausted(
                f"rate limit of {limiter.rate:g} calls/s exceeded for this caller",
                retry_after=timedelta(seconds=wait),
                metadata={"limit_per_second": f"{limiter.rate:g}"},
            )
        return principal

    def _authenticate(self, metadata: Metadata | None) -> Principal:
        acting = _metadata(metadata, TENANT_METADATA)
        if self.keys is None:
            return Principal(
                "anonymous", _tenant(acting or DEFAULT_TENANT), frozenset(ALL_SCOPES), True
            )
        header = _metadata(metadata, AUTHORIZATION)
        if header is None:
            raise Unauthenticated(
                "missing bearer token: send `authorization: Bearer <token>` metadata",
                metadata={"cause": "TOKEN_MISSING"},
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "authorization metadata must be `Bearer <token>`",
                metadata={"cause": "TOKEN_MALFORMED"},
            )
        claims = self._claims(token.strip())
        if claims.token_id in self.revocations:
            raise Unauthenticated("bearer token has been revoked", metadata={"cause": "REVOKED"})
        if claims.is_service:
            tenant = _tenant(acting) if acting else None
            return Principal(
                claims.subject,
                tenant,
                claims.scopes,
                True,
                claims.token_id,
                _actor(_metadata(metadata, ACTOR_METADATA)),
            )
        tenant = claims.tenant
        if acting is not None and acting != tenant:
            raise PermissionDenied(
                "a tenant's token cannot act for another tenant",
                metadata={"cause": "TENANT_MISMATCH"},
            )
        return Principal(claims.subject, tenant, claims.scopes, claims.is_service, claims.token_id)

    def _claims(self, token: str) -> Claims:
        claims = self._verified.get(token)
        if claims is not None:
            if claims.expires_at + self.leeway < time.time():
                del self._verified[token]
                raise Unauthenticated(
                    "bearer token has expired", metadata={"cause": "TOKEN_EXPIRED"}
                )
            return claims
        assert self.keys is not None
        try:
            claims = verify(token, self.keys, leeway=self.leeway)
        except TokenError as exc:
            raise Unauthenticated(str(exc), metadata={"cause": exc.reason}) from None
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[token] = claims
        return claims


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that presents `token`."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


def acting_for(tenant: str, actor: str = "") -> tuple[tuple[str, str], ...]:
    """Call metadata naming the tenant a service token acts for, and for whom."""
    return ((TENANT_METADATA, tenant), *(((ACTOR_METADATA, actor),) if actor else ()))


def _actor(value: str | None) -> str:
    if value is None:
        return ""
    if not _ACTOR.match(value):
        raise InvalidArgument(
            "request is invalid",
            [FieldViolation(ACTOR_METADATA, "must be 1 to 256 printable ASCII characters")],
        )
    return value


class ServiceToken:
    """A service's own token for calls it makes to other services, re-read when rotated."""

    RELOAD_SECONDS = 5.0

    def __init__(self, path: Path | None) -> None:
        self._file = (
            None if path is None else WatchedFile(path, lambda p: bearer(p.read_text().strip()))
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return () if self._file is None else self._file.get(self.RELOAD_SECONDS)
