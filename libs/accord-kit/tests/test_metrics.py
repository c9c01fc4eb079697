"""Metric labels stay bounded, and waits are never negative."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from accord_kit import metrics


def test_bounded_lets_a_fixed_number_of_values_through_then_folds_the_rest() -> None:
    bounded = metrics.Bounded(limit=3)
    assert [bounded(v) for v in ("A", "B", "A", "C")] == ["A", "B", "A", "C"]
    assert bounded("D") == metrics.OTHER
    assert bounded("E") == metrics.OTHER
    assert bounded("B") == "B"  # values already seen keep their own label
    assert {bounded(f"code-{i}") for i in range(10_000)} == {metrics.OTHER}


def test_seconds_since_is_never_negative() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert metrics.seconds_since(now - timedelta(seconds=1.5), now) == 1.5
    # Another host's clock a little ahead: a wait of zero, not a negative one.
    assert metrics.seconds_since(now + timedelta(seconds=2), now) == 0.0


def test_fire_lag_is_observed_once_per_fire() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    before = _count()
    metrics.observe_fire_lag(now, [now - timedelta(seconds=0.1), now - timedelta(seconds=3)])
    assert _count() - before == 2


def _count() -> float:
    return next(
        s.value
        for family in metrics.SCHEDULE_FIRE_LAG.collect()
        for s in family.samples
        if s.name.endswith("_count")
    )
