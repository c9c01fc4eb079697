"""The firing loop's bookkeeping of passes in flight, against a stand-in for the schedules
that always has something due and never lets a pass claim it (another replica holds it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from accord_orchestrator.firing import Firer


class HeldElsewhere:
    """Everything is due now, and every pass ends at once having claimed nothing."""

    def clock(self) -> datetime:
        return datetime.now(UTC)

    async def next_due(self, besides: Sequence[str] = ()) -> datetime | None:
        return self.clock()

    async def fire_due(self, limit: int = 500, claimed: Callable[[list[str]], None] = print) -> int:
        claimed([])
        return 0


async def test_a_pass_that_ends_before_the_loop_hears_of_it_frees_its_slot() -> None:
    # A pass can end (its done callback run) before the loop resumes from waiting on it; it
    # used to be recorded as in flight then, for good, and after `parallel` such passes the
    # replica stopped firing altogether.
    firer = Firer(cast(Any, HeldElsewhere()), parallel=2, contended=0.001, idle=0.05)
    loop = asyncio.create_task(firer._run())
    try:
        await asyncio.sleep(0.5)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    assert firer.passes > 20, firer.passes
    assert len(firer._held) == 0
