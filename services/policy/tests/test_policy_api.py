"""PolicyService through generated stubs against a real server, Postgres and NATS."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.policy.v1 import policy_pb2
from accord.policy.v1 import policy_service_pb2 as pb
from accord_kit.testing import as_tenant, refused

ALLOW = decision_pb2.DECISION_OUTCOME_ALLOW
DENY = decision_pb2.DECISION_OUTCOME_DENY


def spec(*urls: str, engine: int = job_spec_pb2.ENGINE_HTTP) -> job_spec_pb2.JobSpec:
    return job_spec_pb2.JobSpec(
        engine=engine,
        steps=[job_spec_pb2.Step(request=job_spec_pb2.RequestStep(url=u)) for u in urls],
    )


def violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


async def create(stub, name: str, tenant: str = "acme", **rules) -> policy_pb2.Policy:  # type: ignore[no-untyped-def]
    response = await stub.CreatePolicy(
        pb.CreatePolicyRequest(
            request_id=f"req-{name}",
            policy=policy_pb2.Policy(display_name=name, rules=policy_pb2.PolicyRules(**rules)),
        ),
        metadata=as_tenant(tenant),
    )
    return response.policy


async def evaluate(
    stub, s: job_spec_pb2.JobSpec, tenant: str = "acme"
) -> decision_pb2.PolicyDecision:  # type: ignore[no-untyped-def]
    response = await stub.EvaluateJob(pb.EvaluateJobRequest(spec=s), metadata=as_tenant(tenant))
    return response.decision


async def test_a_batch_is_decided_in_order_under_one_revision(policy) -> None:  # type: ignore[no-untyped-def]
    await create(policy, "web", allowed_domains=["example.com"])
    urls = ["https://example.com/", "https://other.test/", "https://example.com/b"]
    response = await policy.EvaluateJobs(
        pb.EvaluateJobsRequest(
            jobs=[pb.EvaluateJobsRequest.Item(spec=spec(u), job_id=str(uuid.uuid4())) for u in urls]
        ),
        metadata=as_tenant("acme"),
    )
    assert [d.outcome for d in response.decisions] == [ALLOW, DENY, ALLOW]
    assert {d.policy_revision for d in response.decisions} == {1}
    assert len({d.decision_id for d in response.decisions}) == 3
    assert [r.code for r in response.decisions[1].reasons] == ["DOMAIN_NOT_ALLOWED"]


async def test_default_deny_without_policy(policy) -> None:  # type: ignore[no-untyped-def]
    decision = await evaluate(policy, spec("https://example.com/"))
    assert decision.outcome == DENY
    assert [r.code for r in decision.reasons] == ["DOMAIN_NOT_ALLOWED"]
    assert decision.policy_revision == 0


async def test_allow_list_with_wildcards_and_deny_wins(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(
        policy,
        "web",
        allowed_domains=["*.example.com", "example.com"],
        denied_domains=["secret.example.com"],
    )
    assert created.revision == 1
    ok = await evaluate(policy, spec("https://example.com/a", "https://www.example.com/b"))
    assert ok.outcome == ALLOW
    assert list(ok.matched_policy_ids) == [created.policy_id]
    assert ok.policy_revision == 1
    denied = await evaluate(policy, spec("https://secret.example.com/"))
    assert denied.outcome == DENY
    assert denied.reasons[0].code == "DOMAIN_DENIED"
    assert denied.reasons[0].policy_id == created.policy_id
    other = await evaluate(policy, spec("https://example.org/"))
    assert other.reasons[0].code == "DOMAIN_NOT_ALLOWED"


async def test_private_network_needs_explicit_allow(policy) -> None:  # type: ignore[no-untyped-def]
    await create(policy, "all", allowed_domains=["*"])
    denied = await evaluate(policy, spec("http://127.0.0.1:8080/"))
    assert denied.reasons[0].code == "PRIVATE_NETWORK"
    await create(policy, "lan", allow_private_networks=True)
    assert (await evaluate(policy, spec("http://127.0.0.1:8080/"))).outcome == ALLOW


async def test_engine_rule_of_most_specific_domain(policy) -> None:  # type: ignore[no-untyped-def]
    await create(
        policy,
        "engines",
        allowed_domains=["*"],
        domain_rules=[
            policy_pb2.DomainRule(
                domain="*.example.com", allowed_engines=[job_spec_pb2.ENGINE_BROWSER]
            ),
            policy_pb2.DomainRule(
                domain="api.example.com", allowed_engines=[job_spec_pb2.ENGINE_HTTP]
            ),
        ],
    )
    assert (await evaluate(policy, spec("https://api.example.com/"))).outcome == ALLOW
    denied = await evaluate(policy, spec("https://www.example.com/"))
    assert denied.reasons[0].code == "ENGINE_NOT_ALLOWED"


async def test_tenants_are_isolated(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    assert (await evaluate(policy, spec("https://example.com/"), tenant="other")).outcome == DENY
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await policy.GetPolicy(
            pb.GetPolicyRequest(policy_id=created.policy_id), metadata=as_tenant("other")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await policy.ListPolicies(pb.ListPoliciesRequest(), metadata=as_tenant("other"))
    assert list(listed.policies) == []


async def test_create_is_idempotent_by_request_id(policy) -> None:  # type: ignore[no-untyped-def]
    first = await create(policy, "web", allowed_domains=["example.com"])
    again = await create(policy, "web", allowed_domains=["example.com"])
    assert again.policy_id == first.policy_id
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await create(policy, "web", allowed_domains=["example.org"])
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_update_with_mask_and_etag(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    change = policy_pb2.Policy(
        policy_id=created.policy_id,
        etag=created.etag,
        rules=policy_pb2.PolicyRules(allowed_domains=["example.org"]),
    )
    mask = field_mask_pb2.FieldMask(paths=["rules.allowed_domains"])
    updated = (
        await policy.UpdatePolicy(
            pb.UpdatePolicyRequest(policy=change, update_mask=mask), metadata=as_tenant("acme")
        )
    ).policy
    assert list(updated.rules.allowed_domains) == ["example.org"]
    assert updated.display_name == "web"
    assert updated.revision == created.revision + 1
    assert (
        await evaluate(policy, spec("https://example.org/"))
    ).policy_revision == updated.revision
    bad_mask = pb.UpdatePolicyRequest(
        policy=change, update_mask=field_mask_pb2.FieldMask(paths=["tenant_id"])
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await policy.UpdatePolicy(bad_mask, metadata=as_tenant("acme"))
    assert "update_mask" in violations(err.value)
    emptied = pb.UpdatePolicyRequest(
        policy=policy_pb2.Policy(policy_id=created.policy_id, etag=updated.etag),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the merged policy is validated
        await policy.UpdatePolicy(emptied, metadata=as_tenant("acme"))
    assert "policy.display_name" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # the old etag is now stale
        await policy.UpdatePolicy(
            pb.UpdatePolicyRequest(policy=change, update_mask=mask), metadata=as_tenant("acme")
        )
    assert err.value.code() == grpc.StatusCode.ABORTED


async def test_a_retried_update_or_delete_gives_the_first_answer_once(policy) -> None:  # type: ignore[no-untyped-def]
    """The same request_id: the first answer, no second revision; a different request under
    it is ALREADY_EXISTS; without one, the repeat's stale etag is ABORTED."""
    created = await create(policy, "web", allowed_domains=["example.com"])
    change = policy_pb2.Policy(
        policy_id=created.policy_id,
        etag=created.etag,
        rules=policy_pb2.PolicyRules(allowed_domains=["example.org"]),
    )
    request = pb.UpdatePolicyRequest(
        policy=change, update_mask=field_mask_pb2.FieldMask(paths=["rules"]), request_id="u1"
    )
    first = (await policy.UpdatePolicy(request, metadata=as_tenant("acme"))).policy
    again = (await policy.UpdatePolicy(request, metadata=as_tenant("acme"))).policy
    assert again == first
    assert first.revision == created.revision + 1
    current = (
        await policy.GetPolicy(
            pb.GetPolicyRequest(policy_id=created.policy_id), metadata=as_tenant("acme")
        )
    ).policy
    assert (current.revision, current.etag) == (first.revision, first.etag)
    request.policy.display_name = "renamed"
    request.update_mask.paths.append("display_name")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await policy.UpdatePolicy(request, metadata=as_tenant("acme"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    request.request_id = ""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await policy.UpdatePolicy(request, metadata=as_tenant("acme"))
    assert err.value.code() == grpc.StatusCode.ABORTED

    delete = pb.DeletePolicyRequest(policy_id=created.policy_id, request_id="d1")
    await policy.DeletePolicy(delete, metadata=as_tenant("acme"))
    await policy.DeletePolicy(delete, metadata=as_tenant("acme"))  # not NOT_FOUND: done once
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await policy.DeletePolicy(
            pb.DeletePolicyRequest(policy_id=created.policy_id), metadata=as_tenant("acme")
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_pages(policy) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        await create(policy, f"p{i}", allowed_domains=[f"d{i}.example.com"])
    seen: list[str] = []
    token = ""
    while True:
        page = await policy.ListPolicies(
            pb.ListPoliciesRequest(page_size=2, page_token=token), metadata=as_tenant("acme")
        )
        seen += [p.display_name for p in page.policies]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"p{i}" for i in range(5)]


async def test_ids_are_case_insensitive(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    shouted = created.policy_id.upper()
    got = await policy.GetPolicy(pb.GetPolicyRequest(policy_id=shouted), metadata=as_tenant("acme"))
    assert got.policy.policy_id == created.policy_id
    updated = await policy.UpdatePolicy(
        pb.UpdatePolicyRequest(
            policy=policy_pb2.Policy(policy_id=shouted, etag=created.etag, display_name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=as_tenant("acme"),
    )
    assert (updated.policy.policy_id, updated.policy.display_name) == (created.policy_id, "renamed")


async def test_delete(policy) -> None:  # type: ignore[no-untyped-def]
    created = await create(policy, "web", allowed_domains=["example.com"])
    await policy.DeletePolicy(
        pb.DeletePolicyRequest(policy_id=created.policy_id), metadata=as_tenant("acme")
    )
    assert (await evaluate(policy, spec("https://example.com/"))).outcome == DENY


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (
            pb.CreatePolicyRequest(request_id="", policy=policy_pb2.Policy(display_name="x")),
            "request_id",
        ),
        (pb.CreatePolicyRequest(request_id="r1"), "policy"),
        (
            pb.CreatePolicyRequest(
                request_id="r1",
                policy=policy_pb2.Policy(
                    display_name="x", rules=policy_pb2.PolicyRules(allowed_domains=["bad domain!"])
                ),
            ),
            "policy.rules.allowed_domains[0]",
        ),
        (pb.GetPolicyRequest(policy_id="not-a-uuid"), "policy_id"),
        (pb.ListPoliciesRequest(page_size=5000), "page_size"),
        (pb.ListPoliciesRequest(page_token="garbage"), "page_token"),
        (pb.EvaluateJobRequest(), "spec"),
        (pb.EvaluateJobRequest(spec=job_spec_pb2.JobSpec(engine=1)), "spec.steps"),
        (pb.EvaluateJobsRequest(), "jobs"),
        (pb.EvaluateJobsRequest(jobs=[pb.EvaluateJobsRequest.Item()]), "jobs[0].spec"),
        (
            pb.EvaluateJobsRequest(
                jobs=[
                    pb.EvaluateJobsRequest.Item(spec=spec("https://example.com/"), job_id="x" * 65)
                ]
            ),
            "jobs[0].job_id",
        ),
        (
            pb.EvaluateJobsRequest(
                jobs=[pb.EvaluateJobsRequest.Item(spec=spec("https://example.com/"))] * 1001
            ),
            "jobs",
        ),
        (
            pb.UpdatePolicyRequest(
                policy=policy_pb2.Policy(display_name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            "policy.policy_id",
        ),
        (
            pb.UpdatePolicyRequest(
                policy=policy_pb2.Policy(policy_id="not-a-uuid", etag="e", display_name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            "policy.policy_id",
        ),
        (
            pb.UpdatePolicyRequest(
                policy=policy_pb2.Policy(
                    policy_id="0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a", display_name="x"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            "policy.etag",
        ),
        (pb.CheckUrlRequest(url="https://example.com/"), "engine"),
    ],
)
async def test_invalid_requests(policy, request_, field: str) -> None:  # type: ignore[no-untyped-def]
    method = getattr(policy, type(request_).__name__.removesuffix("Request"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await method(request_, metadata=as_tenant("acme"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(err.value)


async def test_list_retentions_gives_each_tenant_its_shortest_and_only_to_services(policy) -> None:  # type: ignore[no-untyped-def]
    run = uuid.uuid4().hex[:8]
    a, b, c = f"keep-a-{run}", f"keep-b-{run}", f"keep-c-{run}"
    await create(policy, "two-hours", tenant=a, retention=duration_pb2.Duration(seconds=7200))
    await create(policy, "an-hour", tenant=a, retention=duration_pb2.Duration(seconds=3600))
    await create(policy, "unset", tenant=a)  # sets none: the shortest that is set applies
    await create(policy, "no-retention", tenant=b, allowed_domains=["example.com"])
    await create(policy, "a-day", tenant=c, retention=duration_pb2.Duration(seconds=86400))

    found: dict[str, timedelta] = {}
    token, pages = "", 0
    while pages < 1000:  # the shared database holds other tests' tenants too
        pages += 1
        page = await policy.ListRetentions(pb.ListRetentionsRequest(page_size=2, page_token=token))
        assert not found.keys() & {r.tenant_id for r in page.retentions}, "a tenant twice"
        found |= {r.tenant_id: r.retention.ToTimedelta() for r in page.retentions}
        token = page.next_page_token
        if not token:
            break
    assert {t: kept for t, kept in found.items() if t.endswith(run)} == {
        a: timedelta(hours=1),
        c: timedelta(days=1),
    }
    assert pages >= 2

    tenant = await refused(policy.ListRetentions(pb.ListRetentionsRequest(), metadata=as_tenant(a)))
    assert tenant.code() == grpc.StatusCode.PERMISSION_DENIED
    forged = await refused(policy.ListRetentions(pb.ListRetentionsRequest(page_token="forged")))
    assert forged.code() == grpc.StatusCode.INVALID_ARGUMENT
