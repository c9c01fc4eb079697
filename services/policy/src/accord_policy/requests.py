"""Per-request use cases: CheckUrl, and AcquirePermit / ReleasePermit for the executors.

One request is decided where it is made: its URL against the domain rules, every address
its host resolves to against the network rules, its path against the origin's robots.txt,
and then its host's shared token bucket and concurrency cap. The checked address is
returned: the executor connects to it and nowhere else. Policies are read on every call, so
a policy change applies to the very next request: each call reads the tenant's policy-set
revision (one indexed row), and the parsed policies are reused only while it is unchanged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord_policy import store, telemetry
from accord_policy.domain import addresses as a
from accord_policy.domain import permits, rules
from accord_policy.resolver import Resolve
from accord_policy.robots import Robots, RobotsRules
from accord_policy.service import decision_of, record_decisions

REQUESTS = Counter(
    "accord_policy_requests_total",
    "Per-request decisions by tenant and outcome (allowed, denied, throttled)",
    ["tenant", "outcome"],
)

OVERRIDABLE = {
    job_spec_pb2.AUTHORIZATION_MODE_CUSTOMER_AUTHORIZED,
    job_spec_pb2.AUTHORIZATION_MODE_INTERNAL,
}
DEFAULT_LEASE_SECONDS = 60.0
MAX_CACHED_TENANTS = 10_000


@dataclass(frozen=True)
class Ask:
    """One request to decide."""

    url: str
    engine: job_spec_pb2.Engine.ValueType
    mode: job_spec_pb2.AuthorizationMode.ValueType
    job_id: str


@dataclass(frozen=True)
class Checked:
    """A request's decision before any permit: verdict, addresses and the host's limits."""

    verdict: rules.Verdict
    revision: int
    host: str = ""
    addresses: list[a.Address] = field(default_factory=list)
    limits: permits.Limits = permits.NO_LIMITS


@dataclass(frozen=True)
class Permit:
    """AcquirePermit's answer."""

    decision: decision_pb2.PolicyDecision
    granted: bool
    address: str = ""
    permit_id: str = ""
    expire_time: datetime | None = None
    retry_after: float = 0.0


class RequestUseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        resolve: Resolve,
        robots: Robots,
        *,
        default_deny: bool,
        robots_agent: str,
    ) -> None:
        self._engine = engine
        # The per-request read is one statement: no BEGIN and ROLLBACK around it.
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = sessions
        self._parsed: dict[str, tuple[int, list[rules.TenantPolicy]]] = {}
        self._resolve = resolve
        self._robots = robots
        self._default_deny = default_deny
        self._agent = robots_agent

    async def check_url(
        self, tenant: str, ask: Ask
    ) -> tuple[decision_pb2.PolicyDecision, list[a.Address]]:
        """The decision for one URL, recorded and published as any decision is."""
        checked = await self._check(tenant, ask)
        decision = decision_of(checked.verdict, checked.revision)
        async with self._sessions.begin() as s:
            await record_decisions(s, tenant, [(ask.job_id, ask.url, decision)], dry_run=False)
        return decision, checked.addresses

    async def acquire(self, tenant: str, ask: Ask, wait: float, lease: float) -> Permit:
        """Decide the request, then take a permit, waiting up to `wait` seconds for one.

        Denies are recorded and published; allowed requests are only counted, so the hot
        path writes nothing unless the host has limits.
        """
        checked = await self._check(tenant, ask)
        decision = decision_of(checked.verdict, checked.revision)
        if not checked.verdict.allowed:
            REQUESTS.labels(tenant, "denied").inc()
            async with self._sessions.begin() as s:
                await record_decisions(s, tenant, [(ask.job_id, ask.url, decision)], dry_run=False)
            return Permit(decision, granted=False)
        address = str(checked.addresses[0])
        telemetry.count_decisions([(ask.job_id, ask.url, decision)], dry_run=False)  # unrecorded
        if not checked.limits.any:
            REQUESTS.labels(tenant, "allowed").inc()
            return Permit(decision, granted=True, address=address)
        deadline = time.monotonic() + wait
        lease = lease or DEFAULT_LEASE_SECONDS
        while True:
            async with self._engine.begin() as c:
                taken, permit_id, expire = await store.take_permit(
                    c, tenant, checked.host, checked.limits, lease
                )
            remaining = deadline - time.monotonic()
            if taken.granted:
                REQUESTS.labels(tenant, "allowed").inc()
                return Permit(decision, True, address, permit_id, expire)
            if remaining <= 0:
                REQUESTS.labels(tenant, "throttled").inc()
                return Permit(decision, False, retry_after=taken.retry_after)
            await asyncio.sleep(min(taken.retry_after, remaining))  # the bucket's own pace

    async def release(self, tenant: str, permit_id: str) -> None:
        async with self._engine.begin() as c:
            await store.release_permit(c, tenant, permit_id)

    async def _policies(self, tenant: str) -> tuple[int, list[rules.TenantPolicy]]:
        """The tenant's revision and policies; parsed again only when the revision moved.

        The revision is read first: a policy written between the two reads is paired with
        the older revision and so replaced at the next call, never kept.
        """
        async with self._reader.connect() as c:
            revision = await store.revision(c, tenant)
            cached = self._parsed.get(tenant)
            if cached is not None and cached[0] == revision:
                return cached
            policies = await store.tenant_policies(c, tenant)
        if len(self._parsed) >= MAX_CACHED_TENANTS:
            self._parsed.clear()
        self._parsed[tenant] = (revision, policies)
        return revision, policies

    async def _check(self, tenant: str, ask: Ask) -> Checked:
        revision, policies = await self._policies(tenant)
        try:
            url = rules.parse_url(ask.url)
        except rules.BadUrl as exc:
            return _denied(revision, rules.Reason("INVALID_URL", str(exc), ask.url))
        matched: set[str] = set()
        reasons = rules.check_mode(ask.mode, policies) or rules.check_host(
            url.host, ask.engine, policies, self._default_deny, matched
        )
        if reasons:
            return Checked(rules.Verdict(False, reasons, sorted(matched)), revision)
        try:
            found = await self._addresses(url)
        except OSError as exc:
            reason = rules.Reason("HOST_NOT_RESOLVED", f"{url.host} did not resolve: {exc}")
            return _denied(revision, reason)
        reasons = rules.address_reasons(url.host, found, policies)
        if reasons:
            return Checked(rules.Verdict(False, reasons, sorted(matched)), revision)
        rule = rules.most_specific_rule(url.host, policies)
        delay = None
        if not (rule is not None and rule[1].ignore_robots_txt and ask.mode in OVERRIDABLE):
            robots = await self._robots.rules(url, found, policies)
            if not robots.allows(ask.url, self._agent):
                reason = _robots_refusal(robots, url.origin, ask.url, self._agent)
                return Checked(rules.Verdict(False, [reason], sorted(matched)), revision)
            delay = robots.crawl_delay(self._agent)
        limits = permits.limits(
            rule[1].requests_per_second if rule else 0.0,
            rule[1].burst if rule else 0,
            rule[1].max_concurrency if rule else 0,
            delay,
        )
        verdict = rules.Verdict(True, [], sorted(matched))
        return Checked(verdict, revision, url.host, found, limits)

    async def _addresses(self, url: rules.Url) -> list[a.Address]:
        if url.address is not None:
            return [url.address]
        return a.local_name(url.host) or await self._resolve(url.host, url.port)


def _robots_refusal(robots: RobotsRules, origin: str, url: str, agent: str) -> rules.Reason:
    """Why robots.txt refused a URL: its rules, or (RFC 9309 2.3.1.4) that it could not be
    fetched, which says nothing of the URL itself, so the reason says so."""
    if robots.parsed is not None:
        return rules.Reason(
            "ROBOTS_DISALLOWED", f"robots.txt of {origin} disallows it for {agent}", url
        )
    answer = f"it answered HTTP {robots.status}" if robots.status else "no answer came"
    until = robots.expire_time.astimezone(UTC).strftime("%H:%M:%S UTC")
    return rules.Reason(
        "ROBOTS_UNAVAILABLE",
        f"robots.txt of {origin} could not be fetched ({answer}), which RFC 9309 reads as "
        f"disallowing the whole site until it is fetched again after {until}; "
        "the URL itself was not requested",
        url,
    )


def _denied(revision: int, reason: rules.Reason) -> Checked:
    return Checked(rules.Verdict(False, [reason]), revision)
