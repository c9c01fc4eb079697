"""Policy use cases; each owns its transaction and writes its events to the outbox."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf import field_mask_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.events.v1 import policy_events_pb2
from accord.policy.v1 import policy_pb2, policy_service_pb2
from accord_kit import events, idempotency, outbox, pages, wellformed
from accord_kit.boundary import validate
from accord_kit.errors import Aborted, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from accord_policy import store, telemetry
from accord_policy import tables as t
from accord_policy.domain import rules

PRODUCER = "policy"
UPDATABLE = {"display_name", "rules"}
RULE_FIELDS = set(policy_pb2.PolicyRules.DESCRIPTOR.fields_by_name)
RETENTIONS_PAGE = 1000  # tenants a ListRetentions page looks at unless asked for fewer


@dataclass(frozen=True)
class _Ask:
    """One question to decide: these targets, on whose authority, for which job."""

    targets: list[rules.Target]
    mode: job_spec_pb2.AuthorizationMode.ValueType
    job_id: str
    url: str


class PolicyUseCases:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, default_deny: bool) -> None:
        self._sessions = sessions
        self._default_deny = default_deny

    async def create(self, tenant: str, request_id: str, p: policy_pb2.Policy) -> policy_pb2.Policy:
        async with self._sessions.begin() as s:
            await idempotency.claim(s, "policy.create", tenant, request_id)
            existing = await store.find_by_request(s, tenant, request_id)
            if existing is not None:
                if (
                    existing.policy.display_name != p.display_name
                    or existing.policy.rules != p.rules
                ):
                    raise AlreadyExists("request_id was used for a different policy")
                return existing.policy
            if await store.name_taken(s, tenant, p.display_name):
                raise AlreadyExists(f"a policy named {p.display_name!r} exists")
            now = datetime.now(UTC)
            created = policy_pb2.Policy(
                policy_id=str(uuid.uuid4()),
                tenant_id=tenant,
                display_name=p.display_name,
                rules=p.rules,
                revision=await store.bump_revision(s, tenant),
                etag=_etag(),
            )
            await store.insert_policy(s, created, request_id, now)
            await self._changed(s, tenant, created, "created", [])
            stored = await store.get_policy(s, tenant, created.policy_id)
            assert stored is not None
            return stored.policy

    async def get(self, tenant: str, policy_id: str) -> policy_pb2.Policy:
        async with self._sessions() as s:
            return (await _existing(s, tenant, policy_id)).policy

    async def list_policies(
        self, tenant: str, size: int, token: str
    ) -> tuple[list[policy_pb2.Policy], str]:
        limit = pages.page_size(size)
        position = pages.decode(token, tenant, shape=(pages.TIME, pages.UUID))
        async with self._sessions() as s:
            found = await store.list_policies(s, tenant, position, limit + 1)
        if len(found) <= limit:
            return found, ""
        last = found[limit - 1]
        position = [last.create_time.ToDatetime(tzinfo=UTC).isoformat(), last.policy_id]
        return found[:limit], pages.encode(position, tenant)

    async def retentions(self, size: int, token: str) -> tuple[list[tuple[str, timedelta]], str]:
        """Each tenant's retention where its policies set one, a page of tenants at a time
        (a page may hold fewer entries than tenants looked at: keep on while a token comes)."""
        position = pages.decode(token, "retentions", shape=(pages.KEY,))
        async with self._sessions() as s:
            found, last = await store.retentions(
                s, position[0] if position else None, size or RETENTIONS_PAGE
            )
        return found, pages.encode([last], "retentions") if last is not None else ""

    async def update(
        self,
        tenant: str,
        p: policy_pb2.Policy,
        mask: field_mask_pb2.FieldMask,
        asked: idempotency.Asked | None = None,
    ) -> policy_pb2.Policy:
        """Apply the mask; a repeat of `asked`'s request id returns the first answer."""
        paths = _validate_mask(p, mask)
        async with self._sessions.begin() as s:
            done = await idempotency.recall(
                s, t.outcomes, "policy.update", tenant, asked, policy_pb2.Policy
            )
            if done is not None:
                return done
            current = (await _existing(s, tenant, p.policy_id, lock=True)).policy
            if p.etag != current.etag:
                raise Aborted(
                    "etag is stale; read the policy again", metadata={"etag": current.etag}
                )
            updated = policy_pb2.Policy()
            updated.CopyFrom(current)
            mask.MergeMessage(p, updated, replace_message_field=True, replace_repeated_field=True)
            validate(updated, "policy.")
            if "display_name" in paths and await store.name_taken(
                s, tenant, updated.display_name, current.policy_id
            ):
                raise AlreadyExists(f"a policy named {updated.display_name!r} exists")
            updated.revision = await store.bump_revision(s, tenant)
            updated.etag = _etag()
            await store.update_policy(s, updated, datetime.now(UTC))
            await self._changed(s, tenant, updated, "updated", sorted(paths))
            stored = await store.get_policy(s, tenant, p.policy_id)
            assert stored is not None
            await idempotency.keep(s, t.outcomes, "policy.update", tenant, asked, stored.policy)
            return stored.policy

    async def delete(
        self, tenant: str, policy_id: str, etag: str, asked: idempotency.Asked | None = None
    ) -> None:
        """Delete; a repeat of `asked`'s request id changes nothing and succeeds again."""
        async with self._sessions.begin() as s:
            deleted = policy_service_pb2.DeletePolicyResponse
            earlier = await idempotency.recall(
                s, t.outcomes, "policy.delete", tenant, asked, deleted
            )
            if earlier is not None:
                return
            current = (await _existing(s, tenant, policy_id, lock=True)).policy
            if etag and etag != current.etag:
                raise Aborted(
                    "etag is stale; read the policy again", metadata={"etag": current.etag}
                )
            await store.delete_policy(s, policy_id)
            current.revision = await store.bump_revision(s, tenant)
            await self._changed(s, tenant, current, "deleted", [])
            await idempotency.keep(s, t.outcomes, "policy.delete", tenant, asked, deleted())

    async def evaluate_job(
        self, tenant: str, spec: job_spec_pb2.JobSpec, job_id: str, dry_run: bool
    ) -> decision_pb2.PolicyDecision:
        return (await self.evaluate_jobs(tenant, [(spec, job_id)], dry_run))[0]

    async def evaluate_jobs(
        self, tenant: str, jobs: list[tuple[job_spec_pb2.JobSpec, str]], dry_run: bool
    ) -> list[decision_pb2.PolicyDecision]:
        """One decision per (spec, job_id), all under one read of the tenant's policies."""
        asks = [
            _Ask(rules.targets_of(spec), spec.authorization_mode, job_id, "")
            for spec, job_id in jobs
        ]
        return await self._decide(tenant, asks, dry_run)

    async def _decide(
        self, tenant: str, asks: list[_Ask], dry_run: bool
    ) -> list[decision_pb2.PolicyDecision]:
        async with self._sessions.begin() as s:
            policies = await store.tenant_policies(s, tenant)
            revision = await store.revision(s, tenant)
            decisions = [
                decision_of(
                    rules.evaluate(
                        a.targets,
                        policies,
                        authorization_mode=a.mode,
                        default_deny=self._default_deny,
                    ),
                    revision,
                    dry_run,
                )
                for a in asks
            ]
            await record_decisions(
                s,
                tenant,
                [(a.job_id, a.url, d) for a, d in zip(asks, decisions, strict=True)],
                dry_run=dry_run,
            )
            return decisions

    async def _changed(
        self, s: AsyncSession, tenant: str, p: policy_pb2.Policy, what: str, fields: list[str]
    ) -> None:
        payload = policy_events_pb2.PolicyChanged(
            policy_id=p.policy_id,
            revision=p.revision,
            changed_fields=fields,
            display_name=p.display_name,
        )
        await outbox.enqueue(
            s,
            t.outbox,
            events.envelope(
                producer=PRODUCER,
                aggregate="policy",
                event=what,
                aggregate_id=p.policy_id,
                tenant_id=tenant,
                payload=payload,
            ),
        )


async def _existing(
    s: AsyncSession, tenant: str, policy_id: str, *, lock: bool = False
) -> store.StoredPolicy:
    found = await store.get_policy(s, tenant, policy_id, lock=lock)
    if found is None:
        raise NotFound(f"policy {policy_id} not found")
    return found


def _etag() -> str:
    return uuid.uuid4().hex


def _validate_mask(p: policy_pb2.Policy, mask: field_mask_pb2.FieldMask) -> set[str]:
    # The policy itself is validated after the mask is applied; its id and etag say which
    # version of which policy is changed, so both are required up front.
    missing: list[FieldViolation] = []
    policy_id = wellformed.resource_id(p.policy_id)
    if policy_id is None:
        missing.append(FieldViolation("policy.policy_id", "required, the policy's id (a UUID)"))
    if not p.etag:
        missing.append(FieldViolation("policy.etag", "required: read the policy, send its etag"))
    if missing or policy_id is None:
        raise InvalidArgument("policy.policy_id and policy.etag are required", missing)
    p.policy_id = policy_id
    bad = [
        p
        for p in mask.paths
        if p not in UPDATABLE and not (p.startswith("rules.") and p[6:] in RULE_FIELDS)
    ]
    if bad or not mask.paths:
        raise InvalidArgument(
            "update_mask is invalid",
            [
                FieldViolation(
                    "update_mask",
                    f"paths must be non-empty and among display_name, rules, rules.<field>;"
                    f" got {', '.join(bad) or 'none'}",
                )
            ],
        )
    return set(mask.paths)


async def record_decisions(
    s: AsyncSession,
    tenant: str,
    made: list[tuple[str, str, decision_pb2.PolicyDecision]],
    *,
    dry_run: bool,
) -> None:
    """Store binding decisions (job id, URL, decision) and publish each as an event."""
    if not made:
        return
    telemetry.count_decisions(made, dry_run=dry_run)
    if not dry_run:
        await store.insert_decisions(s, tenant, [(job_id, d) for job_id, _, d in made])
    await outbox.enqueue(
        s,
        t.outbox,
        *(
            events.envelope(
                producer=PRODUCER,
                aggregate="decision",
                event="recorded",
                aggregate_id=d.decision_id,
                tenant_id=tenant,
                payload=policy_events_pb2.DecisionRecorded(decision=d, job_id=job_id, url=url),
            )
            for job_id, url, d in made
        ),
    )


def decision_of(
    verdict: rules.Verdict, revision: int, dry_run: bool = False
) -> decision_pb2.PolicyDecision:
    decision = decision_pb2.PolicyDecision(
        decision_id=str(uuid.uuid4()),
        outcome=decision_pb2.DECISION_OUTCOME_ALLOW
        if verdict.allowed
        else decision_pb2.DECISION_OUTCOME_DENY,
        reasons=[
            decision_pb2.DecisionReason(
                code=r.code, message=r.message, subject=r.subject, policy_id=r.policy_id
            )
            for r in verdict.reasons
        ],
        policy_revision=revision,
        matched_policy_ids=verdict.matched_policy_ids,
        dry_run=dry_run,
    )
    decision.decide_time.GetCurrentTime()
    return decision
