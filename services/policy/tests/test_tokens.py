"""TokenService, rate limits and startup rules, against a real policy server and NATS."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta

import grpc
import nats
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accord.events.v1 import envelope_pb2, policy_events_pb2
from accord.policy.v1 import policy_service_pb2 as pb
from accord.policy.v1 import policy_service_pb2_grpc, token_service_pb2, token_service_pb2_grpc
from accord_kit import tokens
from accord_kit.auth import ConfigError
from accord_kit.testing import as_tenant, bearer, channel, token
from accord_policy.app import App
from accord_policy.config import Settings

ADMIN = bearer(token("acme", ["tokens:admin"], subject="test:token-admin"))


def settings(database_url: str, nats_url: str, **overrides: object) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_url,
        port=0,
        metrics_port=0,
        **overrides,  # type: ignore[arg-type]
    )


async def list_policies(port: int, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    async with channel(port) as ch:
        try:
            await policy_service_pb2_grpc.PolicyServiceStub(ch).ListPolicies(
                pb.ListPoliciesRequest(), metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def refused_within(port: int, metadata: tuple[tuple[str, str], ...]) -> bool:
    for _ in range(50):
        if await list_policies(port, metadata) == grpc.StatusCode.UNAUTHENTICATED:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_revoked_token_is_refused_listed_audited_and_stays_revoked(
    database_url: str, nats_url: str, policy_app: App
) -> None:
    victim = token("acme", ["policies:read"], ttl=timedelta(hours=1))
    claims = tokens.unverified_claims(victim)
    assert await list_policies(policy_app.port, bearer(victim)) == grpc.StatusCode.OK

    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    events = await js.subscribe(
        "accord.policy.v1.token.revoked", deliver_policy=nats.js.api.DeliverPolicy.NEW
    )
    async with channel(policy_app.port) as ch:
        stub = token_service_pb2_grpc.TokenServiceStub(ch)
        request = token_service_pb2.RevokeTokenRequest(token_id=claims["jti"], reason="leaked")
        request.expire_time.FromSeconds(claims["exp"])
        first = (await stub.RevokeToken(request, metadata=ADMIN)).revoked
        again = (await stub.RevokeToken(request, metadata=ADMIN)).revoked
        listed = (
            await stub.ListRevokedTokens(
                token_service_pb2.ListRevokedTokensRequest(), metadata=ADMIN
            )
        ).revoked
    assert first.token_id == claims["jti"]
    assert first.revoked_by == "test:token-admin"
    assert first.expire_time.seconds == claims["exp"]
    assert again == first, "revoking twice returns the first revocation"
    assert claims["jti"] in {r.token_id for r in listed}
    assert await refused_within(policy_app.port, bearer(victim))

    # One event for the two calls, naming the token by id only.
    message = await events.next_msg(timeout=10)
    envelope = envelope_pb2.EventEnvelope.FromString(message.data)
    payload = policy_events_pb2.TokenRevoked()
    assert envelope.payload.Unpack(payload)
    assert (payload.token_id, payload.reason) == (claims["jti"], "leaked")
    assert victim not in message.data.decode(errors="replace")
    with pytest.raises(nats.errors.TimeoutError):
        await events.next_msg(timeout=1)
    await nc.close()

    # A service started later loads the list before it serves.
    later = App(settings(database_url, nats_url))
    await later.start()
    try:
        assert await list_policies(later.port, bearer(victim)) == grpc.StatusCode.UNAUTHENTICATED
        assert await list_policies(later.port, as_tenant("acme")) == grpc.StatusCode.OK
    finally:
        await later.stop()


async def test_a_tenant_admin_revokes_and_sees_only_its_own_tenants_tokens(
    policy_app: App,
) -> None:
    mine = token("acme", ["policies:read"], subject="test:mine")
    theirs = token("globex", ["policies:read"], subject="test:theirs")
    service = token(tokens.SERVICE_TENANT, ["policies:read"], subject="test:service")
    globex_admin = bearer(token("globex", ["tokens:admin"], subject="test:globex-admin"))
    operator = bearer(token(tokens.SERVICE_TENANT, ["tokens:admin"], subject="test:operator"))

    def revoke(victim: str) -> token_service_pb2.RevokeTokenRequest:
        jti = tokens.unverified_claims(victim)["jti"]
        return token_service_pb2.RevokeTokenRequest(token_id=jti, reason="tenancy")

    async with channel(policy_app.port) as ch:
        stub = token_service_pb2_grpc.TokenServiceStub(ch)
        await stub.RevokeToken(revoke(mine), metadata=ADMIN)
        for victim in (theirs, service):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.RevokeToken(revoke(victim), metadata=ADMIN)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await list_policies(policy_app.port, bearer(theirs)) == grpc.StatusCode.OK
        await stub.RevokeToken(revoke(theirs), metadata=globex_admin)

        def ids(response: token_service_pb2.ListRevokedTokensResponse) -> set[str]:
            return {r.token_id for r in response.revoked}

        listing = token_service_pb2.ListRevokedTokensRequest()
        acme_sees = ids(await stub.ListRevokedTokens(listing, metadata=ADMIN))
        globex_sees = ids(await stub.ListRevokedTokens(listing, metadata=globex_admin))
        operator_sees = ids(await stub.ListRevokedTokens(listing, metadata=operator))
    mine_id, theirs_id = (tokens.unverified_claims(t)["jti"] for t in (mine, theirs))
    assert mine_id in acme_sees
    assert theirs_id not in acme_sees
    assert theirs_id in globex_sees
    assert mine_id not in globex_sees
    assert {tokens.tenant_of(i) for i in acme_sees} == {"acme"}
    assert {mine_id, theirs_id} <= operator_sees


async def test_the_revocation_list_pages(policy_app: App) -> None:
    operator = bearer(token(tokens.SERVICE_TENANT, ["tokens:admin"], subject="test:operator"))
    async with channel(policy_app.port) as ch:
        stub = token_service_pb2_grpc.TokenServiceStub(ch)
        for n in range(3):
            jti = tokens.unverified_claims(token("acme", subject=f"test:paged-{n}"))["jti"]
            request = token_service_pb2.RevokeTokenRequest(token_id=jti, reason="paging")
            await stub.RevokeToken(request, metadata=ADMIN)
        whole = await stub.ListRevokedTokens(
            token_service_pb2.ListRevokedTokensRequest(page_size=1000), metadata=operator
        )
        assert len(whole.revoked) >= 3
        assert not whole.next_page_token
        paged: list[str] = []
        page_token = ""
        for _ in range(len(whole.revoked) + 1):
            page = await stub.ListRevokedTokens(
                token_service_pb2.ListRevokedTokensRequest(page_size=2, page_token=page_token),
                metadata=operator,
            )
            assert len(page.revoked) <= 2
            paged += [r.token_id for r in page.revoked]
            if not (page_token := page.next_page_token):
                break
        assert paged == [r.token_id for r in whole.revoked]
        first = await stub.ListRevokedTokens(
            token_service_pb2.ListRevokedTokensRequest(page_size=1), metadata=operator
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:  # the operator's token, for acme
            await stub.ListRevokedTokens(
                token_service_pb2.ListRevokedTokensRequest(page_token=first.next_page_token),
                metadata=ADMIN,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_revocation_requests_are_invalid(policy_app: App) -> None:
    async with channel(policy_app.port) as ch:
        stub = token_service_pb2_grpc.TokenServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.RevokeToken(
                token_service_pb2.RevokeTokenRequest(token_id="not a token id!"), metadata=ADMIN
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_rate_limit_is_per_principal_with_a_retry_delay_and_recovers(
    database_url: str, nats_url: str, policy_app: App
) -> None:
    app = App(settings(database_url, nats_url, rate_limit=2.0, rate_limit_burst=2))
    await app.start()
    try:
        md = as_tenant("acme")
        assert [await list_policies(app.port, md) for _ in range(2)] == [grpc.StatusCode.OK] * 2
        async with channel(app.port) as ch:
            stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ListPolicies(pb.ListPoliciesRequest(), metadata=md)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(err.value)  # type: ignore[arg-type]
        assert status is not None
        retry = error_details_pb2.RetryInfo()
        assert any(d.Unpack(retry) for d in status.details)
        delay = retry.retry_delay.ToTimedelta().total_seconds()
        assert 0 < delay <= 0.5

        # Another principal has its own bucket.
        assert await list_policies(app.port, as_tenant("other")) == grpc.StatusCode.OK
        await asyncio.sleep(delay + 0.05)
        assert await list_policies(app.port, md) == grpc.StatusCode.OK
    finally:
        await app.stop()


def test_a_service_without_keys_refuses_to_start(database_url: str, nats_url: str) -> None:
    with pytest.raises(ConfigError, match="ACCORD_AUTH_KEYS_FILE"):
        App(settings(database_url, nats_url, auth_keys_file=None))


def test_the_process_says_why_it_will_not_start(database_url: str, nats_url: str) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "ACCORD_DATABASE_URL": database_url,
        "ACCORD_NATS_URL": nats_url,
        "ACCORD_POLICY_PORT": "0",
        "ACCORD_POLICY_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "accord_policy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "ACCORD_AUTH_KEYS_FILE" in done.stderr
    assert "Traceback" not in done.stderr


async def test_auth_can_be_disabled_explicitly(
    database_url: str, nats_url: str, policy_app: App
) -> None:
    app = App(settings(database_url, nats_url, auth_keys_file=None, auth_disabled=True))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
            reply = await stub.ListPolicies(
                pb.ListPoliciesRequest(), metadata=(("accord-tenant", "acme"),)
            )
        assert list(reply.policies) == []
    finally:
        await app.stop()
