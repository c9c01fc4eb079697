"""Sending a request to exactly the address the policy checked, not to what DNS says later.

The URL's host is replaced by the checked address, and the original host travels in the
Host header and as the TLS server name, so a DNS answer that changes between the check and
the connect cannot move the request, and a connection pool keys connections by address.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class Pinned:
    """What to hand the HTTP client for one request to one checked address."""

    url: str  # the URL with the checked address as its host
    host_header: str  # the Host header the original URL implies
    server_hostname: str | None  # TLS SNI and certificate name; None for plain http or an IP


def pin(url: str, address: str) -> Pinned:
    """The request to `url`, aimed at `address` (an IP the policy service checked)."""
    parts = urlsplit(url)
    hostname = parts.hostname or ""
    port = parts.port
    literal = f"[{address}]" if ":" in address else address
    netloc = literal if port is None else f"{literal}:{port}"
    host_header = parts.netloc.rsplit("@", 1)[-1]  # userinfo never travels in Host
    named = parts.scheme == "https" and not _is_literal(hostname)
    return Pinned(
        urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")),
        host_header,
        hostname.rstrip(".") if named else None,
    )


def _is_literal(host: str) -> bool:
    return ":" in host or host.replace(".", "").isdigit()
