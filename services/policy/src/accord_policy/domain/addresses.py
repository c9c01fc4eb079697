"""The SSRF guard's pure half: what address a host spells, and whether a tenant may reach it.

Hosts are read the way browsers and `inet_aton` read them (WHATWG URL, section 3.5), so
`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` and `127.0.0.1.` are all 127.0.0.1 here too:
a check that read them differently from the connecting library would be walked around.
An address is refused unless it is globally reachable or inside a network the tenant allows.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


class BadHost(ValueError):
    """The host is not a name or an address any client could connect to."""


def literal(host: str) -> Address | None:
    """The address a host spells, or None for a name; BadHost for a broken literal."""
    if host.startswith("[") or ":" in host:
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if "%" in inner:
            raise BadHost(f"zone ids are not allowed in hosts: {host!r}")
        try:
            return ipaddress.IPv6Address(inner)
        except ValueError:
            raise BadHost(f"not an IPv6 address: {host!r}") from None
    return ipv4_spelling(host)


def ipv4_spelling(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of a decimal, octal, hex or shortened spelling; None for a name."""
    parts = host.split(".")
    if parts and parts[-1] == "" and len(parts) > 1:
        parts.pop()  # one trailing dot names the same host
    if not parts or not _numeric(parts[-1]):
        return None  # a name (`a.b.com`, `1.2.3.com`): the last label decides
    if len(parts) > 4:
        raise BadHost(f"too many parts for an IPv4 address: {host!r}")
    numbers = [_number(p, host) for p in parts]
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise BadHost(f"IPv4 address out of range: {host!r}")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _numeric(part: str) -> bool:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return all(c in "0123456789abcdef" for c in lowered[2:])
    return part.isascii() and part.isdigit()


def _number(part: str, host: str) -> int:
    try:
        if part.lower().startswith("0x"):
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part, 8)
        return int(part, 10)
    except ValueError:
        raise BadHost(f"not an IPv4 address: {host!r}") from None


def canonical_host(host: str) -> str:
    """The host as rules match it: lower case, no trailing dot, addresses in one spelling."""
    address = literal(host)
    if address is None:
        return host.lower().rstrip(".")
    return str(address)


def local_name(host: str) -> list[Address]:
    """The loopback address `localhost` names (RFC 6761), or nothing for other names."""
    if host == "localhost" or host.endswith(".localhost"):
        return [ipaddress.IPv4Address("127.0.0.1")]
    return []


def embedded(address: Address) -> Address:
    """The IPv4 address carried inside an IPv4-mapped, NAT64 or 6to4 IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def special_kind(address: Address) -> str | None:
    """Why an address is not a public Internet address, or None when it is one."""
    inner = embedded(address)
    checks = (
        ("unspecified", inner.is_unspecified),
        ("loopback", inner.is_loopback),
        ("link-local", inner.is_link_local),
        ("multicast", inner.is_multicast),
        ("CGNAT", isinstance(inner, ipaddress.IPv4Address) and inner in _CGNAT),
        ("unique-local", isinstance(inner, ipaddress.IPv6Address) and inner in _UNIQUE_LOCAL),
        ("reserved", inner.is_reserved),
        ("private", inner.is_private),
        ("special-purpose", not inner.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    """Networks in CIDR form; host bits must be zero (`10.0.0.0/8`, not `10.1.2.3/8`)."""
    return [ipaddress.ip_network(c, strict=True) for c in cidrs]


def refusal(address: Address, allowed: Iterable[Network]) -> str | None:
    """Why the address may not be reached, or None when it may.

    A special address is reachable only when an allowed network holds it, in its own
    spelling or, for an IPv6 address carrying IPv4, in the IPv4 one.
    """
    kind = special_kind(address)
    if kind is None:
        return None
    inner = embedded(address)
    if any(a in n for n in allowed for a in {address, inner} if a.version == n.version):
        return None
    return f"{address} is a {kind} address"
