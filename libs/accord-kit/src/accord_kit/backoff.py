"""Bounded exponential backoff with jitter: retrying a dependency that is down, restarting a
process that died."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays that double from `initial` up to `maximum`; half of each is random.

    The random half spreads many clients apart after a server restarts (executors after
    an orchestrator's), so they do not all reconnect in the same instant.
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    attempt: int = 0

    def next(self) -> float:
        cap = min(self.maximum, self.initial * self.multiplier**self.attempt)
        if cap < self.maximum:  # stop growing once capped: the power would overflow
            self.attempt += 1
        return cap / 2 + random.random() * cap / 2  # noqa: S311 - jitter, not cryptography

    def reset(self) -> None:
        self.attempt = 0
