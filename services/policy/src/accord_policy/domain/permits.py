"""Pure permit arithmetic: the token bucket and concurrency cap of one host.

The bucket holds up to `burst` tokens and gains `rate` per second; a request takes one.
The state lives in PostgreSQL (see `store.take_permit`), so every policy process and every
executor draws from the same bucket; this module only says what the locked row allows.
"""

from __future__ import annotations

from dataclasses import dataclass

# When only the concurrency cap refuses, ask again after this long: a release may come
# at any moment and is not announced.
CAP_RETRY_SECONDS = 0.05


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one host; 0 means none of that kind."""

    rate: float
    burst: int
    concurrency: int

    @property
    def any(self) -> bool:
        return self.rate > 0 or self.concurrency > 0


NO_LIMITS = Limits(0.0, 0, 0)


@dataclass(frozen=True)
class Taken:
    """What the bucket says: granted, the tokens left, and when to ask again if not."""

    granted: bool
    tokens: float
    retry_after: float


def limits(rate: float, burst: int, concurrency: int, crawl_delay: float | None) -> Limits:
    """The host's limits, with a robots.txt Crawl-delay lowering the rate to 1/delay."""
    if crawl_delay is not None and crawl_delay > 0:
        slowest = 1.0 / crawl_delay
        rate = slowest if rate <= 0 else min(rate, slowest)
        burst = 1
    if rate <= 0:
        return Limits(0.0, 0, concurrency)
    return Limits(rate, burst if burst > 0 else max(1, int(rate)), concurrency)


def capacity(limits: Limits) -> float:
    """Tokens a fresh bucket starts with: full."""
    return float(limits.burst)


def take(limits: Limits, tokens: float, elapsed: float, held: int) -> Taken:
    """Refill for `elapsed` seconds, then take one token if a slot and a token are free."""
    if limits.rate > 0:
        tokens = min(float(limits.burst), tokens + max(elapsed, 0.0) * limits.rate)
    if limits.concurrency > 0 and held >= limits.concurrency:
        wait = CAP_RETRY_SECONDS
        if limits.rate > 0 and tokens < 1:
            wait = max(wait, (1 - tokens) / limits.rate)
        return Taken(False, tokens, wait)
    if limits.rate > 0 and tokens < 1:
        return Taken(False, tokens, (1 - tokens) / limits.rate)
    return Taken(True, tokens - 1 if limits.rate > 0 else tokens, 0.0)
