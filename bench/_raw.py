"""The baseline: a plain aiohttp loop fetching one URL N times at a given concurrency.

Runs as its own process, as the executor does, so that it does not share a core with the page
it fetches. Usage: `python bench/_raw.py URL N CONCURRENCY`; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

# The executor's HTTP engine identifies itself the same way; the header costs the same.
USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"


async def fetch_all(url: str, total: int, concurrency: int) -> dict[str, float | int]:
    """GET url `total` times with `concurrency` workers over one pool of that size."""
    remaining = iter(range(total))
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for _ in remaining:
            async with session.get(url) as response:
                await response.read()
                failures += response.status != 200

    # Configured like the executor's session: pool size = concurrency, no cookies, no timeout.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency),
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    ) as session:
        started = time.perf_counter()
        async with asyncio.timeout(600):
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"requests": total, "failures": failures, "seconds": seconds}


def main() -> None:
    url, total, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(asyncio.run(fetch_all(url, total, concurrency))))


if __name__ == "__main__":
    main()
