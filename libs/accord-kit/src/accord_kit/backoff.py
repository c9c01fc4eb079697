"""Delays between retries of a dependency that is down: exponential, capped, full jitter."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Each delay is drawn uniformly from [0, min(maximum, initial * multiplier**attempt)].

    Full jitter: the processes that lost a dependency together retry at scattered moments,
    not in step, and the first retry usually comes quickly. `reset` after a success.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    attempt: int = 0

    def next(self) -> float:
        try:
            ceiling = min(self.maximum, self.initial * self.multiplier**self.attempt)
        except OverflowError:  # a caller may start at a late attempt (a job's 400th retry)
            ceiling = self.maximum
        if ceiling < self.maximum:  # stop counting once capped: the power would overflow
            self.attempt += 1
        return random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.attempt = 0

    async def sleep(self) -> None:
        """Wait the next delay."""
        await asyncio.sleep(self.next())
