"""Pure policy evaluation: which targets a tenant's policies allow, with which engine.

All of a tenant's policies apply together. A deny from any of them wins; with default deny
on, a host must be allowed by at least one of them. Private-network targets are refused
unless some policy allows them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from accord.common.v1 import job_spec_pb2
from accord.policy.v1 import policy_pb2

ALLOW = "ALLOW"
DENY = "DENY"


@dataclass(frozen=True)
class Reason:
    code: str
    message: str
    subject: str = ""
    policy_id: str = ""


@dataclass(frozen=True)
class Verdict:
    """The outcome of evaluating targets, before it is stamped into a PolicyDecision."""

    allowed: bool
    reasons: list[Reason] = field(default_factory=list)
    matched_policy_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TenantPolicy:
    policy_id: str
    rules: policy_pb2.PolicyRules


@dataclass(frozen=True)
class Target:
    url: str
    engine: job_spec_pb2.Engine.ValueType


def domain_matches(pattern: str, host: str) -> bool:
    """`*` matches any host, `*.a.com` matches strict subdomains of a.com, else exact."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def specificity(pattern: str) -> int:
    """Longer, non-wildcard patterns are more specific; exact beats wildcard at equal length."""
    return len(pattern.lstrip("*.")) * 2 + (0 if pattern.startswith("*") else 1)


def is_private_host(host: str) -> bool:
    """True for loopback, private, link-local and unspecified IP literals and localhost."""
    if host.lower() in {"localhost", "localhost."} or host.lower().endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or (address.is_unspecified or address.is_reserved)
    )


def targets_of(spec: job_spec_pb2.JobSpec) -> list[Target]:
    """The URLs a spec will request that are known before it runs (templated ones are not)."""
    return [
        Target(step.request.url, spec.engine)
        for step in spec.steps
        if step.WhichOneof("action") == "request" and "{{" not in step.request.url
    ]


def evaluate(
    targets: list[Target],
    policies: list[TenantPolicy],
    *,
    authorization_mode: job_spec_pb2.AuthorizationMode.ValueType,
    default_deny: bool,
) -> Verdict:
    reasons: list[Reason] = []
    matched: set[str] = set()
    reasons += _check_mode(authorization_mode, policies)
    for target in targets:
        host = urlsplit(target.url).hostname or ""
        if not host:
            reasons.append(Reason("INVALID_URL", "URL has no host", target.url))
            continue
        reasons += _check_host(host, target.engine, policies, default_deny, matched)
    return Verdict(not reasons, reasons, sorted(matched))


def _check_mode(
    mode: job_spec_pb2.AuthorizationMode.ValueType, policies: list[TenantPolicy]
) -> list[Reason]:
    highest = max((p.rules.max_authorization_mode for p in policies), default=0)
    public = job_spec_pb2.AUTHORIZATION_MODE_PUBLIC
    if max(mode, public) <= max(highest, public):
        return []
    name = job_spec_pb2.AuthorizationMode.Name(mode)
    return [Reason("AUTHORIZATION_MODE_NOT_PERMITTED", f"{name} is not permitted", name)]


def _check_host(
    host: str,
    engine: job_spec_pb2.Engine.ValueType,
    policies: list[TenantPolicy],
    default_deny: bool,
    matched: set[str],
) -> list[Reason]:
    for p in policies:
        if any(domain_matches(d, host) for d in p.rules.denied_domains):
            matched.add(p.policy_id)
            return [Reason("DOMAIN_DENIED", f"{host} is on a deny list", host, p.policy_id)]
    allowing = [
        p for p in policies if any(domain_matches(d, host) for d in p.rules.allowed_domains)
    ]
    matched.update(p.policy_id for p in allowing)
    if default_deny and not allowing:
        return [Reason("DOMAIN_NOT_ALLOWED", f"{host} is not on any allow list", host)]
    if is_private_host(host) and not any(p.rules.allow_private_networks for p in policies):
        return [Reason("PRIVATE_NETWORK", f"{host} is a private-network target", host)]
    rule = _most_specific_rule(host, policies)
    if rule is not None and rule[1].allowed_engines and engine not in rule[1].allowed_engines:
        matched.add(rule[0])
        name = job_spec_pb2.Engine.Name(engine)
        return [Reason("ENGINE_NOT_ALLOWED", f"{name} may not be used for {host}", host, rule[0])]
    return []


def _most_specific_rule(
    host: str, policies: list[TenantPolicy]
) -> tuple[str, policy_pb2.DomainRule] | None:
    candidates = [
        (p.policy_id, r)
        for p in policies
        for r in p.rules.domain_rules
        if domain_matches(r.domain, host)
    ]
    return max(candidates, key=lambda c: specificity(c[1].domain), default=None)
