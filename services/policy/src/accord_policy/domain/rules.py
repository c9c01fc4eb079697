"""Pure policy evaluation: which targets a tenant's policies allow, with which engine.

All of a tenant's policies apply together. A deny from any of them wins; with default deny
on, a host must be allowed by at least one of them. Non-public addresses are refused unless
some policy lists a network holding them (see `addresses`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from accord.common.v1 import job_spec_pb2
from accord.policy.v1 import policy_pb2
from accord_policy.domain import addresses as a

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


@dataclass(frozen=True)
class Url:
    """An absolute http(s) URL, split and checked: what a client would connect to."""

    scheme: str
    host: str  # canonical: lower case, addresses in dotted or compressed form
    port: int
    address: a.Address | None  # the host, when it is an address literal

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


# A bracketed IPv6 literal or a bracket-free host, then an optional port: nothing else.
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\[\]:]*)(:[0-9]*)?$")


class BadUrl(ValueError):
    """A URL no client could fetch: the reason is said to the caller as a DENY."""


def parse_url(url: str) -> Url:
    """Split and check an absolute http(s) URL; BadUrl says what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # bad brackets, a port that is not a number or out of range
        raise BadUrl(f"malformed URL: {exc}") from None
    if not _HOST_PORT.match(parts.netloc.rsplit("@", 1)[-1]):
        raise BadUrl(f"malformed host or port in {parts.netloc!r}")
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise BadUrl(f"scheme {scheme or 'none'!r} is not http or https")
    raw = parts.hostname or ""
    if not raw:
        raise BadUrl("URL has no host")
    if any(c in raw for c in " \t\r\n%/\\@"):
        raise BadUrl(f"host {raw!r} has characters no host may have")
    if port == 0:
        raise BadUrl("port 0 cannot be connected to")
    bracketed = "[" in parts.netloc
    try:
        address = a.literal(f"[{raw}]" if bracketed else raw)
    except a.BadHost as exc:
        raise BadUrl(str(exc)) from None
    host = str(address) if address is not None else raw.lower().rstrip(".")
    return Url(scheme, host, port or (443 if scheme == "https" else 80), address)


def most_specific_rule(
    host: str, policies: list[TenantPolicy]
) -> tuple[str, policy_pb2.DomainRule] | None:
    """The (policy id, rule) of the most specific domain rule matching the host."""
    candidates = [
        (p.policy_id, r)
        for p in policies
        for r in p.rules.domain_rules
        if domain_matches(r.domain, host)
    ]
    return max(candidates, key=lambda c: specificity(c[1].domain), default=None)


def address_reasons(
    host: str, found: list[a.Address], policies: list[TenantPolicy]
) -> list[Reason]:
    """Why any of the addresses a host resolved to may not be reached (empty: all may)."""
    if any(p.rules.allow_private_networks for p in policies):
        return []  # the deprecated switch: every non-public network is allowed
    allowed: list[a.Network] = []
    for p in policies:
        allowed += a.parse_networks(p.rules.allowed_networks)
    reasons = []
    for address in found:
        why = a.refusal(address, allowed)
        if why is not None:
            reasons.append(
                Reason(
                    "PRIVATE_NETWORK",
                    f"{host} resolves to {address}: {why.split(': ', 1)[-1]} that no policy's"
                    " allowed_networks holds",
                    host,
                )
            )
    return reasons[:1]


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
    reasons += check_mode(authorization_mode, policies)
    for target in targets:
        try:
            url = parse_url(target.url)
        except BadUrl as exc:
            reasons.append(Reason("INVALID_URL", str(exc), target.url))
            continue
        found = check_host(url.host, target.engine, policies, default_deny, matched)
        # Before the job runs only literal addresses are known; names are resolved and
        # checked for each request (AcquirePermit), where the answer is used.
        known = [url.address] if url.address is not None else a.local_name(url.host)
        reasons += found or address_reasons(url.host, known, policies)
    return Verdict(not reasons, reasons, sorted(matched))


def check_mode(
    mode: job_spec_pb2.AuthorizationMode.ValueType, policies: list[TenantPolicy]
) -> list[Reason]:
    highest = max((p.rules.max_authorization_mode for p in policies), default=0)
    public = job_spec_pb2.AUTHORIZATION_MODE_PUBLIC
    if max(mode, public) <= max(highest, public):
        return []
    name = job_spec_pb2.AuthorizationMode.Name(mode)
    return [Reason("AUTHORIZATION_MODE_NOT_PERMITTED", f"{name} is not permitted", name)]


def check_host(
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
    rule = most_specific_rule(host, policies)
    if rule is not None and rule[1].allowed_engines and engine not in rule[1].allowed_engines:
        matched.add(rule[0])
        name = job_spec_pb2.Engine.Name(engine)
        return [Reason("ENGINE_NOT_ALLOWED", f"{name} may not be used for {host}", host, rule[0])]
    return []
