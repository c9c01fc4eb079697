"""robots.txt per RFC 9309: fetched through the SSRF guard, cached per origin, parsed by protego.

A 2xx body is parsed; any 4xx means no rules; a 5xx, a network failure or a redirect to a
refused address means disallow everything until the next fetch. Entries live in PostgreSQL,
shared by every policy process, for 24 h or less if the response says so (errors for
`error_ttl`); each process keeps the parsed form until the same expiry time.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin

import aiohttp
import structlog
from protego import Protego
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord_kit.pinning import pin
from accord_policy import store
from accord_policy.domain import addresses as a
from accord_policy.domain.rules import BadUrl, TenantPolicy, Url, address_reasons, parse_url
from accord_policy.resolver import Resolve

log = structlog.get_logger("accord.policy.robots")

MAX_BYTES = 512 * 1024  # RFC 9309 2.5: parse at least 500 KiB
MAX_REDIRECTS = 5  # RFC 9309 2.3.1.2
DEFAULT_TTL = 24 * 3600.0
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)")
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class RobotsRules:
    """The rules of one origin as last fetched."""

    status: int  # 0 when unreachable
    parsed: Protego | None
    expire_time: datetime

    def allows(self, url: str, agent: str) -> bool:
        if self.status == 0 or self.status >= 500:
            return False
        if self.parsed is None:
            return True  # 4xx: no rules
        return bool(self.parsed.can_fetch(url, agent))

    def crawl_delay(self, agent: str) -> float | None:
        if self.parsed is None:
            return None
        delay = self.parsed.crawl_delay(agent)
        return float(delay) if delay is not None else None


class Robots:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        resolve: Resolve,
        *,
        user_agent: str,
        timeout: float,
        error_ttl: float,
    ) -> None:
        self._sessions = sessions
        self._resolve = resolve
        self._user_agent = user_agent
        self._timeout = timeout
        self._error_ttl = error_ttl
        self._parsed: dict[str, RobotsRules] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            headers={"User-Agent": self._user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def rules(
        self, url: Url, checked: list[a.Address], policies: list[TenantPolicy]
    ) -> RobotsRules:
        """The origin's rules: cached, or fetched now from the address already checked."""
        origin = url.origin
        cached = self._cached(origin)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            if (cached := self._cached(origin)) is not None:
                return cached
            async with self._sessions() as s:
                stored = await store.get_robots(s, origin)
            if stored is None:
                status, body, ttl = await self._fetch(origin, checked[0], policies)
                async with self._sessions.begin() as s:
                    await store.put_robots(s, origin, status, body, ttl)
                    stored = await store.get_robots(s, origin)
                assert stored is not None
            found = RobotsRules(
                stored.status,
                Protego.parse(stored.body) if 200 <= stored.status < 300 else None,
                stored.expire_time,
            )
        self._locks.pop(origin, None)
        if len(self._parsed) >= _MAX_CACHED:
            self._parsed.clear()
        self._parsed[origin] = found
        return found

    def _cached(self, origin: str) -> RobotsRules | None:
        found = self._parsed.get(origin)
        if found is not None and found.expire_time > datetime.now(UTC):
            return found
        return None

    async def _fetch(
        self, origin: str, address: a.Address, policies: list[TenantPolicy]
    ) -> tuple[int, str, float]:
        """(status, body, seconds to keep it); status 0 when it could not be fetched."""
        assert self._http is not None, "Robots.start() was not called"
        url = f"{origin}/robots.txt"
        try:
            for _ in range(MAX_REDIRECTS + 1):
                pinned = pin(url, str(address))
                async with self._http.get(
                    pinned.url,
                    headers={"Host": pinned.host_header},
                    server_hostname=pinned.server_hostname,
                    allow_redirects=False,
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in {301, 302, 303, 307, 308} and location:
                        url = urljoin(url, location)
                        address = await self._checked(url, policies)
                        continue
                    body = await response.content.read(MAX_BYTES)
                    ttl = _ttl(response.headers.get("Cache-Control", ""))
                    if response.status >= 500:
                        return response.status, "", min(ttl, self._error_ttl)
                    return response.status, body.decode("utf-8", errors="replace"), ttl
            return 404, "", self._error_ttl  # RFC 9309 2.3.1.2: too many redirects
        except (aiohttp.ClientError, OSError, TimeoutError, BadUrl, _Refused) as exc:
            log.info("robots.unreachable", origin=origin, error=repr(exc))
            return 0, "", self._error_ttl

    async def _checked(self, url: str, policies: list[TenantPolicy]) -> a.Address:
        """A redirect target's address, through the same guard as any request."""
        target = parse_url(url)
        found = (
            [target.address]
            if target.address is not None
            else a.local_name(target.host) or await self._resolve(target.host, target.port)
        )
        if address_reasons(target.host, found, policies):
            raise _Refused(f"robots.txt redirected to a refused address: {url}")
        return found[0]


class _Refused(Exception):
    """A robots.txt redirect pointed where the tenant may not connect."""


def _ttl(cache_control: str) -> float:
    found = _MAX_AGE.search(cache_control.lower())
    return min(DEFAULT_TTL, float(found.group(1))) if found else DEFAULT_TTL
