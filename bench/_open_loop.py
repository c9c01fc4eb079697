"""Open-loop load: calls launched on a fixed schedule, however long earlier ones take.

A closed loop of N clients slows its own offered load when the server slows down, and so
hides queueing (coordinated omission). Here call i is due at start + i / rate and is sent
then, whether or not earlier calls have returned, and its latency runs from the time it was
due. A client late on its schedule therefore counts against the server, never for it; how
late the sends were is reported beside the latencies so that it can be judged.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from _report import percentile

# The first call is due this long after the schedule is built.
LEAD_SECONDS = 0.05


@dataclass
class Load:
    """What one fixed offered rate saw. A failed call counts as infinitely slow."""

    rate: float  # calls/s offered
    seconds: float  # how long calls were offered
    latencies: list[float] = field(default_factory=list)  # s, due time to reply, all calls
    send_lag: list[float] = field(default_factory=list)  # s, due time to actual send
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    # The first failure of each status code: its message and how long it had waited.
    error_details: dict[str, str] = field(default_factory=dict)

    def p(self, q: float) -> float:
        """Latency percentile in ms (inf when more than 100 - q % of the calls failed)."""
        return percentile(sorted(self.latencies), q) * 1000

    def lag(self, q: float) -> float:
        """Percentile of how late the client sent, in ms."""
        return percentile(sorted(self.send_lag), q) * 1000


async def offer(
    call: Callable[[int], Awaitable[object]], rate: float, seconds: float, first: int = 0
) -> Load:
    """Call `call(first)`, `call(first + 1)`, ... at `rate` per second for `seconds`.

    Returns once every call has returned or failed; each call bounds its own wait.
    """
    load = Load(rate, seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + LEAD_SECONDS

    async def one(i: int, due: float) -> None:
        sent = loop.time()
        load.send_lag.append(sent - due)
        try:
            await call(first + i)
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            load.errors[code] += 1
            waited = loop.time() - sent
            load.error_details.setdefault(code, f"{exc.details()!r} after {waited:.1f} s")
            load.latencies.append(math.inf)
            return
        load.latencies.append(loop.time() - due)

    calls = []
    for i in range(round(rate * seconds)):
        due = start + i / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        calls.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*calls)
    return load
