"""Connection pools per tenant: a connection one tenant's job opened never carries another's.

A keep-alive connection holds state a request can leave behind (a half-read body, a server
that stalls); kept per tenant, what one tenant's job leaves behind can only ever reach that
tenant's next request, and one tenant's stalled hosts cannot take every slot of a shared
pool. Pools of tenants not seen for a while are closed once no request uses them.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

import aiohttp

# Pools kept open at once; beyond this the least recently used idle pool is closed.
MAX_POOLS = 256


class TenantPools:
    def __init__(self, make: Callable[[], aiohttp.ClientSession], keep: int = MAX_POOLS) -> None:
        self._make = make
        self._keep = keep
        self._pools: OrderedDict[str, aiohttp.ClientSession] = OrderedDict()
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def session(self, tenant: str) -> AsyncIterator[aiohttp.ClientSession]:
        """The tenant's pool, kept open while the block runs."""
        pool = self._pools.get(tenant)
        if pool is None:
            pool = self._pools[tenant] = self._make()
        self._pools.move_to_end(tenant)
        self._users[tenant] = self._users.get(tenant, 0) + 1
        try:
            yield pool
        finally:
            self._users[tenant] -= 1
            if not self._users[tenant]:
                del self._users[tenant]
            await self._trim()

    async def _trim(self) -> None:
        idle = [t for t in self._pools if t not in self._users]
        for tenant in idle[: max(0, len(self._pools) - self._keep)]:
            await self._pools.pop(tenant).close()

    async def close(self) -> None:
        while self._pools:
            await self._pools.popitem()[1].close()
