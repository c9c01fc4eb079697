"""Accord's bearer tokens: Ed25519-signed JWTs, their keys, issuing and verifying them.

A token carries `sub` (who), `tenant` (whose data; `*` for a service acting for any tenant),
`scope` (space-separated scopes), `exp`, `iat`, `jti` (its id, for revocation: a tenant's
token's id starts with its tenant and `_`, so revoking it can be kept to that tenant) and is signed
by one of several keys, named by `kid` in its header, so keys can rotate: the verification
key set holds old and new public keys at once. Keys are JWKs (RFC 8037, `OKP`/`Ed25519`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

T = TypeVar("T")

ISSUER = "accord"
AUDIENCE = "accord"
ALGORITHM = "EdDSA"
SERVICE_TENANT = "*"
TENANT_PATTERN = re.compile(r"^(\*|[a-z0-9][a-z0-9_-]{0,62})$")
MAX_TTL = timedelta(days=90)
DEFAULT_LEEWAY = 5.0
"""Seconds a token is still accepted after its `exp` (and before its `nbf`): clock skew
between the issuer and the services, no more. Configurable as `token_leeway_seconds`."""
_TOKEN_ID = re.compile(r"^([a-z0-9][a-z0-9_-]{0,62})_[0-9a-f]{32}$")
# Every scope an RPC can require (see accord/common/v1/auth.proto).
ALL_SCOPES = (
    "jobs:read",
    "jobs:write",
    "schedules:read",
    "schedules:write",
    "workflows:read",
    "workflows:write",
    "worker",
    "policies:read",
    "policies:admin",
    "policies:evaluate",
    "tokens:admin",
    "executor:run",
    "executor:read",
    "audit:read",
)

# What each service's own token (tenant `*`) may do when it calls the others.
SERVICE_SCOPES = {
    "orchestrator": ("policies:evaluate",),
    "executor": ("worker", "policies:evaluate"),
}


class TokenError(Exception):
    """A token that cannot be trusted; `reason` is stable (TOKEN_EXPIRED, UNKNOWN_KEY, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    subject: str
    tenant: str
    scopes: frozenset[str]
    token_id: str
    expires_at: float

    @property
    def is_service(self) -> bool:
        return self.tenant == SERVICE_TENANT


def generate_key(kid: str | None = None) -> dict[str, Any]:
    """A new Ed25519 private key as a JWK, with a fresh key id."""
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate(), as_dict=True)
    return {**jwk, "kid": kid or uuid.uuid4().hex[:16], "alg": ALGORITHM, "use": "sig"}


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in private.items() if k != "d"}


def write_secret(path: Path, text: str) -> None:
    """Write a file readable by its owner only: a private key or a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def write_private_key(path: Path, key: dict[str, Any]) -> None:
    write_secret(path, json.dumps(key))


def write_key_set(path: Path, private_keys: Iterable[dict[str, Any]]) -> None:
    """Write the public halves as a JWKS file, the form every service verifies with."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keys": [public_jwk(k) for k in private_keys]}, indent=2))


def provision(folder: Path, key: dict[str, Any]) -> dict[str, str]:
    """Key, key set and a token per calling service in `folder`; the environment naming them.

    What a stack needs to run with auth on: `accord up` and the test suite both use it.
    """
    write_private_key(folder / "signing.jwk", key)
    write_key_set(folder / "keys.json", [key])
    env = {
        "ACCORD_AUTH_KEYS_FILE": str(folder / "keys.json"),
        "ACCORD_AUTH_SIGNING_KEY_FILE": str(folder / "signing.jwk"),
    }
    for service, scopes in SERVICE_SCOPES.items():
        path = folder / f"{service}.token"
        own = issue(
            key, subject=f"service:{service}", tenant=SERVICE_TENANT, scopes=scopes, ttl=MAX_TTL
        )
        write_secret(path, own + "\n")
        env[f"ACCORD_{service.upper()}_TOKEN_FILE"] = str(path)
    return env


def read_private_key(path: Path) -> dict[str, Any]:
    key: dict[str, Any] = json.loads(path.read_text())
    if key.get("kty") != "OKP" or "d" not in key or "kid" not in key:
        raise ValueError(f"{path} is not an Ed25519 private JWK with a kid")
    return key


def issue(
    private: dict[str, Any],
    *,
    subject: str,
    tenant: str,
    scopes: Iterable[str],
    ttl: timedelta,
    now: float | None = None,
) -> str:
    """Sign a token; `ttl` is capped at MAX_TTL so revocation entries can expire too."""
    if ttl <= timedelta(0) or ttl > MAX_TTL:
        raise ValueError(f"ttl must be positive and at most {MAX_TTL.days} days")
    if not TENANT_PATTERN.match(tenant):
        raise ValueError("tenant must be * or match [a-z0-9][a-z0-9_-]{0,62}")
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "tenant": tenant,
        "scope": " ".join(sorted(set(scopes))),
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl.total_seconds()),
        "jti": uuid.uuid4().hex if tenant == SERVICE_TENANT else f"{tenant}_{uuid.uuid4().hex}",
    }
    key = OKPAlgorithm.from_jwk(private)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the signing key must be an Ed25519 private key")
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": private["kid"]})


def tenant_of(token_id: str) -> str | None:
    """The tenant whose token this id is, or None for a service token's (or an old id)."""
    match = _TOKEN_ID.match(token_id)
    return match.group(1) if match else None


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token without checking it: for revoking a token one holds."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


class WatchedFile(Generic[T]):
    """A file's parsed content, re-read when the file changes, looked at every few seconds.

    The first read happens at once and raises; later ones that fail (a half-written
    rotation) keep the content already read.
    """

    def __init__(self, path: Path, parse: Callable[[Path], T]) -> None:
        self.path = path
        self._parse = parse
        self._mtime = path.stat().st_mtime
        self._value = parse(path)
        self._checked = time.monotonic()

    def get(self, every: float) -> T:
        now = time.monotonic()
        if now - self._checked > every:
            self._checked = now
            with contextlib.suppress(OSError, ValueError):
                mtime = self.path.stat().st_mtime
                if mtime != self._mtime:
                    self._value, self._mtime = self._parse(self.path), mtime
        return self._value


def _public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in json.loads(path.read_text()).get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and "kid" in jwk:
            public = OKPAlgorithm.from_jwk({k: v for k, v in jwk.items() if k != "d"})
            assert isinstance(public, Ed25519PublicKey)
            keys[jwk["kid"]] = public
    return keys


class KeySet:
    """The public keys tokens are verified with, reloaded when the JWKS file changes."""

    RELOAD_SECONDS = 5.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = WatchedFile(path, _public_keys)
        if not self._file.get(self.RELOAD_SECONDS):
            raise ValueError(f"{path} holds no Ed25519 verification keys")

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self._file.get(self.RELOAD_SECONDS).get(kid)


def verify(token: str, keys: KeySet, *, leeway: float = DEFAULT_LEEWAY) -> Claims:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenError("TOKEN_MALFORMED", "bearer token is not a JWT") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError("TOKEN_MALFORMED", "bearer token must be signed with EdDSA")
    key = keys.get(str(header.get("kid", "")))
    if key is None:
        raise TokenError("UNKNOWN_KEY", "bearer token is signed by an unknown key")
    try:
        raw = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=leeway,
            options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("TOKEN_EXPIRED", "bearer token has expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("BAD_SIGNATURE", "bearer token signature is invalid") from None
    except jwt.PyJWTError as exc:
        raise TokenError("TOKEN_INVALID", f"bearer token is invalid: {exc}") from None
    tenant, scope = raw.get("tenant"), raw.get("scope", "")
    if (
        not isinstance(tenant, str)
        or not TENANT_PATTERN.match(tenant)
        or not isinstance(scope, str)
    ):
        raise TokenError("TOKEN_INVALID", "bearer token lacks a valid tenant or scope claim")
    return Claims(
        subject=str(raw["sub"]),
        tenant=tenant,
        scopes=frozenset(scope.split()),
        token_id=str(raw["jti"]),
        expires_at=float(raw["exp"]),
    )
