"""Tenant isolation of PolicyService with real tenant-bound tokens: tenant B ("other")
can neither see nor change tenant A's ("acme") policies, and A's policies never decide
B's jobs. Another tenant's policy id is NOT_FOUND, like an id that never existed."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import field_mask_pb2

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.policy.v1 import policy_pb2
from accord.policy.v1 import policy_service_pb2 as pb
from accord_kit.auth import TENANT_METADATA
from accord_kit.testing import as_tenant, error_info, refused
from services.policy.tests.test_policy_api import ALLOW, DENY, create, evaluate, spec

ACME = as_tenant("acme")
OTHER = as_tenant("other")
# Tenant B's own token claiming to act for tenant A.
BORROWED = (*OTHER, (TENANT_METADATA, "acme"))


def masked(err: grpc.aio.AioRpcError, policy_id: str) -> tuple[object, ...]:
    """What a caller learns from a refusal, with the id it sent blanked out."""
    info = {k: v.replace(policy_id, "<id>") for k, v in error_info(err).items()}
    return err.code(), (err.details() or "").replace(policy_id, "<id>"), info


async def get(stub, policy_id: str, md=ACME) -> policy_pb2.Policy:  # type: ignore[no-untyped-def]
    return (await stub.GetPolicy(pb.GetPolicyRequest(policy_id=policy_id), metadata=md)).policy


async def listed(stub, md, page_size: int = 0) -> list[policy_pb2.Policy]:  # type: ignore[no-untyped-def]
    found: list[policy_pb2.Policy] = []
    token = ""
    while True:
        page = await stub.ListPolicies(
            pb.ListPoliciesRequest(page_size=page_size, page_token=token), metadata=md
        )
        found += page.policies
        token = page.next_page_token
        if not token:
            return found


def update(policy_id: str, etag: str, **fields) -> pb.UpdatePolicyRequest:  # type: ignore[no-untyped-def]
    return pb.UpdatePolicyRequest(
        policy=policy_pb2.Policy(policy_id=policy_id, etag=etag, **fields),
        update_mask=field_mask_pb2.FieldMask(paths=sorted(fields)),
    )


async def test_get_of_another_tenants_policy_is_not_found_like_a_missing_one(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    theirs = await refused(
        policy.GetPolicy(pb.GetPolicyRequest(policy_id=created.policy_id), metadata=OTHER)
    )
    assert theirs.code() == grpc.StatusCode.NOT_FOUND
    missing_id = str(uuid.uuid4())
    missing = await refused(
        policy.GetPolicy(pb.GetPolicyRequest(policy_id=missing_id), metadata=OTHER)
    )
    assert masked(theirs, created.policy_id) == masked(missing, missing_id)
    assert await get(policy, created.policy_id) == created  # the owner still can


async def test_lists_hold_only_the_callers_policies(policy) -> None:  # type: ignore[no-untyped-def]
    acme = [await create(policy, f"a{i}", allowed_domains=[f"a{i}.example.com"]) for i in range(3)]
    other = [
        await create(policy, f"b{i}", tenant="other", allowed_domains=[f"b{i}.example.com"])
        for i in range(2)
    ]
    for page_size in (0, 1, 2, 1000):
        assert [p.policy_id for p in await listed(policy, OTHER, page_size)] == [
            p.policy_id for p in other
        ]
        assert [p.policy_id for p in await listed(policy, ACME, page_size)] == [
            p.policy_id for p in acme
        ]
    assert {p.tenant_id for p in await listed(policy, OTHER)} == {"other"}
    assert await listed(policy, as_tenant("nobody")) == []


async def test_a_page_token_of_one_tenant_is_refused_for_another(policy) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        await create(policy, f"p{i}", allowed_domains=[f"d{i}.example.com"])
    first = await policy.ListPolicies(pb.ListPoliciesRequest(page_size=1), metadata=ACME)
    assert first.next_page_token
    err = await refused(
        policy.ListPolicies(
            pb.ListPoliciesRequest(page_size=1, page_token=first.next_page_token), metadata=OTHER
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_update_of_another_tenants_policy_is_not_found_and_changes_nothing(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    takeover = [
        update(created.policy_id, created.etag, display_name="taken over"),
        update(
            created.policy_id,
            created.etag,
            rules=policy_pb2.PolicyRules(allowed_domains=["attacker.example.net"]),
        ),
        # A stale etag must not be ABORTED either: that answer carries the current etag.
        update(created.policy_id, "stale", display_name="taken over"),
    ]
    for request in takeover:
        err = await refused(policy.UpdatePolicy(request, metadata=OTHER))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert created.etag not in str(error_info(err)) + (err.details() or "")
    missing_id = str(uuid.uuid4())
    missing = await refused(
        policy.UpdatePolicy(update(missing_id, "stale", display_name="x"), metadata=OTHER)
    )
    assert masked(err, created.policy_id) == masked(missing, missing_id)
    assert await get(policy, created.policy_id) == created
    assert (await evaluate(policy, spec("https://attacker.example.net/"))).outcome == DENY
    assert (await evaluate(policy, spec("https://example.com/"))).policy_revision == 1


async def test_delete_of_another_tenants_policy_is_not_found_and_changes_nothing(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    for etag in (created.etag, "", "stale"):
        err = await refused(
            policy.DeletePolicy(
                pb.DeletePolicyRequest(policy_id=created.policy_id, etag=etag), metadata=OTHER
            )
        )
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert created.etag not in str(error_info(err)) + (err.details() or "")
    missing_id = str(uuid.uuid4())
    missing = await refused(
        policy.DeletePolicy(pb.DeletePolicyRequest(policy_id=missing_id), metadata=OTHER)
    )
    assert masked(err, created.policy_id) == masked(missing, missing_id)
    assert await get(policy, created.policy_id) == created
    decision = await evaluate(policy, spec("https://example.com/"))
    assert decision.outcome == ALLOW
    assert decision.policy_revision == 1  # no delete bumped acme's revision


async def test_another_tenants_allow_policy_does_not_allow_the_callers_jobs(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com", "*.example.com"])
    assert (await evaluate(policy, spec("https://example.com/"))).outcome == ALLOW
    for tenant in ("other", "nobody"):
        decision = await evaluate(policy, spec("https://example.com/"), tenant=tenant)
        assert decision.outcome == DENY
        assert [r.code for r in decision.reasons] == ["DOMAIN_NOT_ALLOWED"]
        assert list(decision.matched_policy_ids) == []
        assert created.policy_id not in str(decision)
        assert decision.policy_revision == 0  # acme's writes are not in B's revision
        checked = await policy.CheckUrl(
            pb.CheckUrlRequest(url="https://www.example.com/", engine=job_spec_pb2.ENGINE_HTTP),
            metadata=as_tenant(tenant),
        )
        assert checked.decision.outcome == DENY
    dry = await policy.EvaluateJob(
        pb.EvaluateJobRequest(spec=spec("https://example.com/"), dry_run=True), metadata=OTHER
    )
    assert dry.decision.outcome == DENY


async def test_another_tenants_deny_policy_does_not_deny_the_callers_jobs(policy) -> None:  # type: ignore[no-untyped-def]
    await create(policy, "block", denied_domains=["secret.example.com"], allowed_domains=["*"])
    mine = await create(policy, "web", tenant="other", allowed_domains=["*.example.com"])
    decision = await evaluate(policy, spec("https://secret.example.com/"), tenant="other")
    assert decision.outcome == ALLOW
    assert list(decision.matched_policy_ids) == [mine.policy_id]
    assert decision.policy_revision == mine.revision == 1
    assert (await evaluate(policy, spec("https://secret.example.com/"))).outcome == DENY


async def test_a_request_id_or_name_used_by_another_tenant_makes_the_callers_own_policy(
    policy,  # type: ignore[no-untyped-def]
) -> None:
    acme = await create(policy, "web", allowed_domains=["example.com"])
    # Same request id and name, other rules: no ALREADY_EXISTS revealing acme's policy.
    other = await create(policy, "web", tenant="other", allowed_domains=["example.org"])
    assert other.policy_id != acme.policy_id
    assert other.tenant_id == "other"
    assert list(other.rules.allowed_domains) == ["example.org"]
    again = await create(policy, "web", tenant="other", allowed_domains=["example.org"])
    assert again.policy_id == other.policy_id
    assert await get(policy, acme.policy_id) == acme


async def test_a_tenant_token_naming_another_tenant_is_permission_denied(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    calls = [
        policy.GetPolicy(pb.GetPolicyRequest(policy_id=created.policy_id), metadata=BORROWED),
        policy.ListPolicies(pb.ListPoliciesRequest(), metadata=BORROWED),
        policy.UpdatePolicy(
            update(created.policy_id, created.etag, display_name="taken over"), metadata=BORROWED
        ),
        policy.DeletePolicy(pb.DeletePolicyRequest(policy_id=created.policy_id), metadata=BORROWED),
        policy.CreatePolicy(
            pb.CreatePolicyRequest(
                request_id="borrowed",
                policy=policy_pb2.Policy(
                    display_name="borrowed", rules=policy_pb2.PolicyRules(allowed_domains=["*"])
                ),
            ),
            metadata=BORROWED,
        ),
        policy.EvaluateJob(
            pb.EvaluateJobRequest(spec=spec("https://example.com/")), metadata=BORROWED
        ),
        policy.CheckUrl(
            pb.CheckUrlRequest(url="https://example.com/", engine=job_spec_pb2.ENGINE_HTTP),
            metadata=BORROWED,
        ),
    ]
    for call in calls:
        err = await refused(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(err)["cause"] == "TENANT_MISMATCH"
    assert [p.policy_id for p in await listed(policy, ACME)] == [created.policy_id]
    assert await get(policy, created.policy_id) == created
    assert await listed(policy, OTHER) == []
    # Naming its own tenant is allowed: the refusal is about the mismatch.
    own = (*OTHER, (TENANT_METADATA, "other"))
    decision = (
        await policy.EvaluateJob(
            pb.EvaluateJobRequest(spec=spec("https://example.com/")), metadata=own
        )
    ).decision
    assert decision.outcome == decision_pb2.DECISION_OUTCOME_DENY
