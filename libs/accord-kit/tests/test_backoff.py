"""The retry delays: exponential ceilings, capped, drawn with full jitter."""

from __future__ import annotations

from accord_kit.backoff import Backoff


def test_delays_stay_under_a_ceiling_that_doubles_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0)
    for ceiling in (0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0):
        assert 0 <= backoff.next() <= ceiling
    assert backoff.attempt == 5, "counting stops at the cap, so the power never overflows"
    for _ in range(10_000):
        assert 0 <= backoff.next() <= 2.0


def test_full_jitter_spreads_delays_over_the_whole_range() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0)
    delays = [backoff.next() for _ in range(2000)]
    assert min(delays) < 0.1
    assert max(delays) > 0.9


def test_reset_starts_again_from_the_initial_ceiling() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0)
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.1
