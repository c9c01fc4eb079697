"""Calendar logic against a fixed clock: DST gaps and repeats in New York and Berlin for
cron (Vixie rules) and RRULE (RFC 5545), COUNT/UNTIL/EXDATE, intervals, one-offs, bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accord_kit.errors import InvalidArgument
from accord_orchestrator.domain import calendars as c

NY, BERLIN = "America/New_York", "Europe/Berlin"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def fires(calendar: c.Calendar, after: datetime, count: int) -> list[str]:
    """The next fires as wall times with their offset, e.g. `03-08 03:00-0400`."""
    return [
        f.astimezone(calendar.zone).strftime("%m-%d %H:%M%z")
        for f in c.upcoming(calendar, after, count)
    ]


def cron(expression: str, zone: str) -> c.Calendar:
    return c.parse(time_zone=zone, start=EPOCH, cron=expression)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# (zone, the day before the change in UTC, expression, the fires expected)
SPRING = [
    # A fixed time inside the gap fires once, at the first instant after it.
    (
        NY,
        at(2026, 3, 7),
        "30 2 * * *",
        ["03-07 02:30-0500", "03-08 03:00-0400", "03-09 02:30-0400"],
    ),
    (
        BERLIN,
        at(2026, 3, 28),
        "30 2 * * *",
        ["03-28 02:30+0100", "03-29 03:00+0200", "03-30 02:30+0200"],
    ),
    # Two times inside the gap still fire once.
    (NY, at(2026, 3, 8, 6), "0,30 2 * * *", ["03-08 03:00-0400", "03-09 02:00-0400"]),
    # A fixed time outside the change keeps its wall time.
    (NY, at(2026, 3, 7), "0 9 * * *", ["03-07 09:00-0500", "03-08 09:00-0400", "03-09 09:00-0400"]),
    (
        BERLIN,
        at(2026, 3, 28),
        "0 9 * * *",
        ["03-28 09:00+0100", "03-29 09:00+0200", "03-30 09:00+0200"],
    ),
    # Wildcard jobs run on elapsed time: the lost hour has no fire.
    (
        NY,
        at(2026, 3, 8, 5),
        "0 * * * *",
        ["03-08 01:00-0500", "03-08 03:00-0400", "03-08 04:00-0400"],
    ),
    (
        BERLIN,
        at(2026, 3, 28, 23, 30),
        "0 * * * *",
        ["03-29 01:00+0100", "03-29 03:00+0200", "03-29 04:00+0200"],
    ),
    (
        NY,
        at(2026, 3, 8, 6, 30),
        "*/15 1-3 * * *",
        ["03-08 01:45-0500", "03-08 03:00-0400", "03-08 03:15-0400"],
    ),
    (
        BERLIN,
        at(2026, 3, 29, 0, 30),
        "*/15 1-3 * * *",
        ["03-29 01:45+0100", "03-29 03:00+0200", "03-29 03:15+0200"],
    ),
]

AUTUMN = [
    # A fixed time inside the repeat fires once, at its first occurrence.
    (
        NY,
        at(2026, 10, 31),
        "30 1 * * *",
        ["10-31 01:30-0400", "11-01 01:30-0400", "11-02 01:30-0500"],
    ),
    (
        BERLIN,
        at(2026, 10, 24),
        "30 2 * * *",
        ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"],
    ),
    # Seconds first; a time outside the change.
    (
        BERLIN,
        at(2026, 10, 24),
        "0 0 9 * * *",
        ["10-24 09:00+0200", "10-25 09:00+0100", "10-26 09:00+0100"],
    ),
    (
        NY,
        at(2026, 10, 31),
        "0 9 * * *",
        ["10-31 09:00-0400", "11-01 09:00-0500", "11-02 09:00-0500"],
    ),
    # Wildcard jobs fire in both halves of the repeated hour.
    (
        NY,
        at(2026, 11, 1, 4),
        "0 * * * *",
        ["11-01 01:00-0400", "11-01 01:00-0500", "11-01 02:00-0500", "11-01 03:00-0500"],
    ),
    (
        BERLIN,
        at(2026, 10, 24, 22, 30),
        "0 * * * *",
        ["10-25 01:00+0200", "10-25 02:00+0200", "10-25 02:00+0100", "10-25 03:00+0100"],
    ),
    (
        NY,
        at(2026, 11, 1, 5, 20),
        "*/15 1-3 * * *",
        [
            "11-01 01:30-0400",
            "11-01 01:45-0400",
            "11-01 01:00-0500",
            "11-01 01:15-0500",
            "11-01 01:30-0500",
            "11-01 01:45-0500",
            "11-01 02:00-0500",
        ],
    ),
    (
        BERLIN,
        at(2026, 10, 25, 0, 40),
        "*/15 1-3 * * *",
        ["10-25 02:45+0200", "10-25 02:00+0100", "10-25 02:15+0100"],
    ),
]


@pytest.mark.parametrize(("zone", "after", "expression", "expected"), SPRING + AUTUMN)
def test_cron_across_dst_follows_vixie_cron(
    zone: str, after: datetime, expression: str, expected: list[str]
) -> None:
    assert fires(cron(expression, zone), after, len(expected)) == expected


def test_each_fire_of_a_repeated_hour_is_found_from_inside_it() -> None:
    """Asking from the first half of the repeat still finds the rest of it, then the second."""
    calendar = cron("*/30 * * * *", NY)
    after = datetime(2026, 11, 1, 1, 10, tzinfo=calendar.zone)  # 01:10 EDT
    assert fires(calendar, after.astimezone(UTC), 4) == [
        "11-01 01:30-0400",
        "11-01 01:00-0500",
        "11-01 01:30-0500",
        "11-01 02:00-0500",
    ]


@pytest.mark.parametrize(
    ("zone", "start", "expected"),
    [
        # 02:30 does not exist on 8 March: moved forward by the gap, to 03:30 EDT.
        (
            NY,
            at(2026, 3, 6, 7, 30),
            ["03-06 02:30-0500", "03-07 02:30-0500", "03-08 03:30-0400", "03-09 02:30-0400"],
        ),
        (
            BERLIN,
            at(2026, 3, 27, 1, 30),
            ["03-27 02:30+0100", "03-28 02:30+0100", "03-29 03:30+0200", "03-30 02:30+0200"],
        ),
    ],
)
def test_rrule_gap_moves_forward_by_the_gap(
    zone: str, start: datetime, expected: list[str]
) -> None:
    calendar = c.parse(time_zone=zone, start=start, rrule="FREQ=DAILY;COUNT=4")
    assert fires(calendar, EPOCH, 10) == expected  # COUNT ends it after four


@pytest.mark.parametrize(
    ("zone", "start", "until", "expected"),
    [
        (
            NY,
            at(2026, 10, 31, 5, 30),
            "20261102T063000Z",  # 01:30 EST on 2 November: included
            ["10-31 01:30-0400", "11-01 01:30-0400", "11-02 01:30-0500"],
        ),
        (
            BERLIN,
            at(2026, 10, 24, 0, 30),
            "20261026T013000Z",  # 02:30 CET on 26 October: included
            ["10-24 02:30+0200", "10-25 02:30+0200", "10-26 02:30+0100"],
        ),
    ],
)
def test_rrule_repeat_fires_once_and_until_ends_it(
    zone: str, start: datetime, until: str, expected: list[str]
) -> None:
    calendar = c.parse(time_zone=zone, start=start, rrule=f"FREQ=DAILY;UNTIL={until}")
    assert fires(calendar, EPOCH, 10) == expected


def test_rrule_count_counts_from_dtstart_whenever_asked() -> None:
    calendar = c.parse(time_zone=BERLIN, start=at(2026, 5, 1, 7), rrule="FREQ=WEEKLY;COUNT=3")
    assert fires(calendar, at(2026, 5, 9), 10) == ["05-15 09:00+0200"]
    assert c.next_after(calendar, at(2026, 5, 15, 7)) is None


def test_rrule_exdate_removes_a_fire() -> None:
    calendar = c.parse(
        time_zone=NY,
        start=at(2026, 6, 1, 13),
        rrule="RRULE:FREQ=DAILY;COUNT=3\nEXDATE:20260602T090000",
    )
    assert fires(calendar, EPOCH, 10) == ["06-01 09:00-0400", "06-03 09:00-0400"]


def test_interval_is_anchored_at_start_and_ignores_the_wall_clock() -> None:
    start = at(2026, 3, 8, 5, 50)
    calendar = c.parse(time_zone=NY, start=start, interval=timedelta(minutes=25))
    assert c.upcoming(calendar, EPOCH, 3) == [
        start,
        start + timedelta(minutes=25),
        start + timedelta(minutes=50),
    ]
    assert c.next_after(calendar, start + timedelta(minutes=25)) == start + timedelta(minutes=50)


def test_once_fires_once_and_end_time_bounds_every_kind() -> None:
    once = c.parse(time_zone="", start=EPOCH, once=at(2026, 2, 1))
    assert c.upcoming(once, EPOCH, 5) == [at(2026, 2, 1)]
    ended = c.parse(time_zone="", start=EPOCH, end=at(2026, 1, 1, 3), cron="0 * * * *")
    assert len(c.upcoming(ended, EPOCH, 10)) == 3
    late = c.parse(time_zone="", start=at(2026, 1, 5), cron="0 0 * * *")
    assert c.next_after(late, EPOCH) == at(2026, 1, 5)


def test_between_lists_a_range_in_order_and_reports_a_cut() -> None:
    calendar = cron("*/10 * * * *", "UTC")
    assert c.between(calendar, at(2026, 1, 1, 0), at(2026, 1, 1, 0, 30), 100) == [
        at(2026, 1, 1, 0, 0),
        at(2026, 1, 1, 0, 10),
        at(2026, 1, 1, 0, 20),
    ]
    assert len(c.between(calendar, at(2026, 1, 1), at(2026, 1, 2), 5)) == 6


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "61 * * * *"}, "spec.cron"),
        ({"cron": "* * * *"}, "spec.cron"),
        ({"cron": "0 0 30 2 *"}, "spec.cron"),
        ({"cron": "0 * * * *", "time_zone": "Mars/Olympus"}, "spec.time_zone"),
        ({"cron": "0 * * * *", "time_zone": "../etc/passwd"}, "spec.time_zone"),
        ({"rrule": "FREQ=SOMETIMES"}, "spec.rrule"),
        ({"rrule": "DTSTART:20260101T000000\nRRULE:FREQ=DAILY"}, "spec.rrule"),
        ({"interval": timedelta(milliseconds=10)}, "spec.interval"),
        ({"cron": "0 * * * *", "end": EPOCH}, "spec.end_time"),
        ({}, "spec"),
    ],
)
def test_invalid_calendars_name_their_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"time_zone": "UTC", "start": EPOCH} | kwargs
    with pytest.raises(InvalidArgument) as caught:
        c.parse(**args)  # type: ignore[arg-type]
    assert [v.field for v in caught.value.violations] == [field]


def test_jitter_is_the_same_on_every_replica_and_within_its_limit() -> None:
    limit = timedelta(seconds=30)
    delays = {c.jitter(f"s1/{i}", limit) for i in range(50)}
    assert all(timedelta(0) <= d < limit for d in delays)
    assert len(delays) > 40
    assert c.jitter("s1/7", limit) == c.jitter("s1/7", limit)
    assert c.jitter("s1/7", timedelta(0)) == timedelta(0)
