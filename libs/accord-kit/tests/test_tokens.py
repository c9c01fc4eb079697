"""Tokens, key rotation, the rate limiter and the authenticator's rules, in process."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from accord.policy.v1 import policy_service_pb2  # noqa: F401 - registers the descriptors
from accord_kit import caller, tokens
from accord_kit.auth import ACTOR_METADATA, Authenticator, Principal, RateLimiter, acting_for
from accord_kit.config import ServiceSettings
from accord_kit.errors import InvalidArgument, PermissionDenied, Unauthenticated
from accord_kit.revocations import Revocations
from accord_kit.testing import bearer

LIST = "/accord.policy.v1.PolicyService/ListPolicies"


def key_set(tmp_path: Path, *keys: dict[str, object]) -> tokens.KeySet:
    path = tmp_path / "keys.json"
    tokens.write_key_set(path, keys)  # type: ignore[arg-type]
    return tokens.KeySet(path)


def issue(key: dict[str, object], tenant: str = "acme", **kw: object) -> str:
    return tokens.issue(
        key,  # type: ignore[arg-type]
        subject=kw.pop("subject", "alice"),  # type: ignore[arg-type]
        tenant=tenant,
        scopes=kw.pop("scopes", ["policies:read"]),  # type: ignore[arg-type]
        ttl=kw.pop("ttl", timedelta(minutes=5)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def authenticator(keys: tokens.KeySet, rate: float = 1000) -> Authenticator:
    return Authenticator(keys, Revocations(), RateLimiter(rate, rate), RateLimiter(rate, rate))


def test_a_token_round_trips_its_claims(tmp_path: Path) -> None:
    key = tokens.generate_key()
    claims = tokens.verify(issue(key, scopes=["jobs:read", "jobs:write"]), key_set(tmp_path, key))
    assert (claims.subject, claims.tenant) == ("alice", "acme")
    assert claims.scopes == {"jobs:read", "jobs:write"}
    assert claims.token_id.startswith("acme_")
    assert tokens.tenant_of(claims.token_id) == "acme"
    assert not claims.is_service


def test_keys_rotate_old_and_new_verify_until_the_old_is_dropped(tmp_path: Path) -> None:
    old, new = tokens.generate_key(), tokens.generate_key()
    keys = key_set(tmp_path, old, new)
    keys.RELOAD_SECONDS = 0
    old_token, new_token = issue(old), issue(new)
    assert tokens.verify(old_token, keys).subject == tokens.verify(new_token, keys).subject
    time.sleep(0.01)  # a distinct mtime for the rewritten file
    tokens.write_key_set(keys.path, [new])
    with pytest.raises(tokens.TokenError) as err:
        tokens.verify(old_token, keys)
    assert err.value.reason == "UNKNOWN_KEY"
    assert tokens.verify(new_token, keys).subject == "alice"


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda t: t.rsplit(".", 1)[0] + ".AAAA", "BAD_SIGNATURE"),
        (lambda t: "not-a-jwt", "TOKEN_MALFORMED"),
        (lambda t: _with_payload(t, tenant="other"), "BAD_SIGNATURE"),
        (lambda t: jwt.encode({"sub": "x"}, "secret", algorithm="HS256"), "TOKEN_MALFORMED"),
        (lambda t: _with_header(t, alg="none"), "TOKEN_MALFORMED"),
    ],
    ids=["bad-signature", "garbage", "tampered-tenant", "hmac", "alg-none"],
)
def test_forged_tokens_are_refused(tmp_path: Path, forge, reason: str) -> None:  # type: ignore[no-untyped-def]
    key = tokens.generate_key()
    with pytest.raises(tokens.TokenError) as err:
        tokens.verify(forge(issue(key)), key_set(tmp_path, key))
    assert err.value.reason == reason


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _with_payload(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join([header, _b64({**claims, **changes}), signature])


def _with_header(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    return ".".join([_b64({**fields, **changes}), payload, signature])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": timedelta(days=91)}, "ttl"),
        ({"ttl": timedelta(0)}, "ttl"),
        ({"scopes": ["jobs:everything"]}, "unknown scopes"),
        ({"tenant": "Not A Tenant"}, "tenant"),
    ],
)
def test_issue_refuses_what_no_service_would_accept(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        issue(tokens.generate_key(), **kwargs)


def test_the_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.take("a", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", now=100.0) == pytest.approx(0.1)
    assert limiter.take("b", now=100.0) == 0.0
    # 0.25 s at 10/s refills two and a half calls' worth.
    assert [limiter.take("a", now=100.25) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a", now=100.25) == pytest.approx(0.05)


def test_a_tenant_token_cannot_act_for_another_tenant(tmp_path: Path) -> None:
    key = tokens.generate_key()
    auth = authenticator(key_set(tmp_path, key))
    tenant_token = bearer(issue(key))
    assert auth.admit(LIST, tenant_token).tenant == "acme"
    assert auth.admit(LIST, (*tenant_token, ("accord-tenant", "acme"))).tenant == "acme"
    with pytest.raises(PermissionDenied):
        auth.admit(LIST, (*tenant_token, ("accord-tenant", "other")))


def test_a_service_token_acts_for_the_tenant_it_names(tmp_path: Path) -> None:
    key = tokens.generate_key()
    auth = authenticator(key_set(tmp_path, key))
    service = bearer(issue(key, tenant=tokens.SERVICE_TENANT))
    principal = auth.admit(LIST, (*service, ("accord-tenant", "other")))
    assert (principal.tenant, principal.is_service) == ("other", True)
    assert auth.admit(LIST, service).tenant is None
    with pytest.raises(InvalidArgument):
        auth.admit(LIST, (*service, ("accord-tenant", "../etc")))


def test_malformed_authorization_headers_are_unauthenticated(tmp_path: Path) -> None:
    key = tokens.generate_key()
    auth = authenticator(key_set(tmp_path, key))
    for header in ("Basic abc", "Bearer ", issue(key)):
        with pytest.raises(Unauthenticated):
            auth.admit(LIST, (("authorization", header),))


def test_a_cached_token_still_expires(tmp_path: Path) -> None:
    key = tokens.generate_key()
    auth = authenticator(key_set(tmp_path, key))
    # Expired 4 s ago: inside the default 5 s clock-skew leeway for one more second.
    short = bearer(issue(key, ttl=timedelta(seconds=1), now=time.time() - 5))
    assert auth.admit(LIST, short).subject == "alice"
    time.sleep(1.2)
    with pytest.raises(Unauthenticated, match="expired"):
        auth.admit(LIST, short)


def test_expiry_leeway_is_small_by_default_and_configurable(tmp_path: Path) -> None:
    """A token that expired 20 s ago is refused under the default 5 s leeway."""
    key = tokens.generate_key()
    keys = key_set(tmp_path, key)
    expired = issue(key, ttl=timedelta(seconds=1), now=time.time() - 21)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(expired, keys)
    with pytest.raises(Unauthenticated, match="expired"):
        authenticator(keys).admit(LIST, bearer(expired))
    assert tokens.verify(expired, keys, leeway=30).subject == "alice"
    lenient = Authenticator.from_settings(
        ServiceSettings(auth_keys_file=tmp_path / "keys.json", token_leeway_seconds=30)
    )
    assert lenient.admit(LIST, bearer(expired)).subject == "alice"
    assert ServiceSettings().token_leeway_seconds == tokens.DEFAULT_LEEWAY


def test_a_token_id_names_its_tenant_and_a_service_tokens_none(tmp_path: Path) -> None:
    key = tokens.generate_key()
    keys = key_set(tmp_path, key)
    assert tokens.verify(issue(key, tenant="my_team-2"), keys).token_id.startswith("my_team-2_")
    assert tokens.tenant_of(tokens.verify(issue(key, tenant="my_team-2"), keys).token_id) == (
        "my_team-2"
    )
    service = tokens.verify(issue(key, tenant=tokens.SERVICE_TENANT), keys)
    assert tokens.tenant_of(service.token_id) is None
    for other in ("acme", "acme_", "_" + "0" * 32, "Acme_" + "0" * 32, "acme_" + "0" * 31):
        assert tokens.tenant_of(other) is None


def test_a_service_names_who_it_calls_for_and_only_a_service_can(tmp_path: Path) -> None:
    key = tokens.generate_key()
    auth = authenticator(key_set(tmp_path, key))
    service = bearer(issue(key, tenant=tokens.SERVICE_TENANT, subject="service:orchestrator"))
    forwarded = auth.admit(LIST, (*service, *acting_for("acme", "alice@acme")))
    assert (forwarded.subject, forwarded.actor, forwarded.tenant) == (
        "service:orchestrator",
        "alice@acme",
        "acme",
    )
    assert auth.admit(LIST, (*service, *acting_for("acme"))).actor == "service:orchestrator"
    tenant = bearer(issue(key, subject="mallory"))
    assert auth.admit(LIST, (*tenant, (ACTOR_METADATA, "alice@acme"))).actor == "mallory"
    with pytest.raises(InvalidArgument):
        auth.admit(LIST, (*service, *acting_for("acme", "x" * 257)))


def test_a_service_forwards_the_actor_of_the_call_it_serves() -> None:
    user = Principal("alice@acme", "acme", frozenset(), is_service=False)
    bound = caller.bind(user)
    try:
        assert dict(caller.acting_for("acme"))[ACTOR_METADATA] == "alice@acme"
    finally:
        caller.unbind(bound)
    assert ACTOR_METADATA not in dict(caller.acting_for("acme"))
