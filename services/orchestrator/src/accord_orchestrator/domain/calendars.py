"""When a schedule fires: cron, fixed intervals, RFC 5545 RRULE and one-off times, in an
IANA zone, correct across daylight-saving changes. Pure: every answer is "the first fire
strictly after this instant", so the caller's clock is the only clock.

Cron follows Vixie cron across DST: a local time in a spring gap fires once, at the first
instant after the gap; a local time the autumn repeats fires once, at its first occurrence;
"wildcard" jobs (minute or hour field starting with `*`) run on elapsed time instead, so they
skip the gap and fire in both halves of the repeat. RRULE follows RFC 5545: a nonexistent
local time moves forward by the gap, a repeated one is its first occurrence.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter  # type: ignore[import-untyped]
from dateutil import rrule as dateutil_rrule

from accord_kit.errors import FieldViolation, InvalidArgument

# How far around an instant to look for a DST change that shifts the wall clock; no zone
# moves its clock by more than this at once.
_SHIFT = timedelta(hours=6)
# Wall-clock candidates examined per answer at most: a cron that matches nothing for this
# many steps (e.g. 30 February) never fires.
_MAX_STEPS = 100_000
# Fires are looked for this far ahead at most.
_HORIZON = timedelta(days=366 * 5)
_UTC_STAMP = re.compile(r"(\d{8}T\d{6})Z")


@dataclass(frozen=True)
class Calendar:
    """A schedule's calendar, parsed. Exactly one of cron, interval, rrule, once is set."""

    zone: ZoneInfo
    start: datetime
    end: datetime | None = None
    cron: str = ""
    interval: timedelta | None = None
    rrule: str = ""
    once: datetime | None = None

    @property
    def wildcard(self) -> bool:
        """Vixie cron's rule: a job whose minute or hour field starts with `*`."""
        fields = self.cron.split()
        minute, hour = (fields[1], fields[2]) if len(fields) == 6 else (fields[0], fields[1])
        return minute.startswith("*") or hour.startswith("*")


def zone(name: str, field: str = "spec.time_zone") -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(field, f"unknown IANA time zone {name!r}") from None


def parse(
    *,
    time_zone: str,
    start: datetime,
    end: datetime | None = None,
    cron: str = "",
    interval: timedelta | None = None,
    rrule: str = "",
    once: datetime | None = None,
    prefix: str = "spec.",
) -> Calendar:
    """The calendar, or InvalidArgument naming the field that is wrong."""
    tz = zone(time_zone, f"{prefix}time_zone")
    if end is not None and end <= start:
        raise _invalid(f"{prefix}end_time", "must be after start_time")
    calendar = Calendar(tz, start, end, cron.strip(), interval, rrule.strip(), once)
    if cron:
        fields = cron.split()
        if len(fields) not in (5, 6) or not croniter.is_valid(
            cron, second_at_beginning=len(fields) == 6
        ):
            raise _invalid(
                f"{prefix}cron", "must be a cron expression of 5 fields, or 6 with seconds first"
            )
        if end is None and _next_wall(calendar, start) is None:
            raise _invalid(f"{prefix}cron", "never matches a date (e.g. 30 February)")
    elif interval is not None:
        if interval < timedelta(seconds=1):
            raise _invalid(f"{prefix}interval", "must be at least 1 s")
    elif rrule:
        try:
            _rule(calendar)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise _invalid(f"{prefix}rrule", f"is not a valid RFC 5545 RRULE: {exc}") from None
    elif once is None:
        raise _invalid(prefix.rstrip(".") or "spec", "one of cron, interval, rrule, once_time")
    return calendar


def next_after(calendar: Calendar, after: datetime) -> datetime | None:
    """The first fire strictly after `after` (UTC), or None when there is none."""
    c = calendar
    floor = c.start - timedelta(microseconds=1)
    after = max(after, floor)
    if c.once is not None:
        found: datetime | None = c.once if c.once > after else None
    elif c.interval is not None:
        steps = (after - c.start) // c.interval + 1
        found = c.start + max(steps, 0) * c.interval
    else:
        found = _next_wall(c, after)
    if found is None or (c.end is not None and found > c.end):
        return None
    return found


def upcoming(calendar: Calendar, after: datetime, count: int) -> list[datetime]:
    """The next `count` fires after `after`, fewer when the calendar ends."""
    found: list[datetime] = []
    while len(found) < count and (when := next_after(calendar, after)) is not None:
        found.append(when)
        after = when
    return found


def between(calendar: Calendar, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Fires in [start, end), at most `limit` + 1 (so a caller can tell it was cut)."""
    found: list[datetime] = []
    after = start - timedelta(microseconds=1)
    while len(found) <= limit and (when := next_after(calendar, after)) is not None:
        if when >= end:
            break
        found.append(when)
        after = when
    return found


def _next_wall(c: Calendar, after: datetime) -> datetime | None:
    """Walk wall-clock candidates from a little before `after`'s wall time, map each to its
    instants, and keep the earliest instant after `after`. The walk starts early enough
    that a repeated hour's second half is seen, and stops once no later candidate can be
    earlier than the best found."""
    offsets = [(after + d).astimezone(c.zone).utcoffset() for d in (-_SHIFT, timedelta(0), _SHIFT)]
    low = min(o for o in offsets if o is not None)
    high = max(o for o in offsets if o is not None)
    wall = (after + low).replace(tzinfo=None) - timedelta(seconds=1)
    limit = after + _HORIZON
    best: datetime | None = None
    for steps, candidate in enumerate(_walls(c, wall)):
        if best is not None and candidate - high >= best.replace(tzinfo=None):
            break
        if steps >= _MAX_STEPS or candidate - high > limit.replace(tzinfo=None):
            break
        for instant in _instants(c, candidate):
            if instant > after and (best is None or instant < best):
                best = instant
    return best


def _walls(c: Calendar, start: datetime) -> Iterator[datetime]:
    """Naive wall-clock times of the calendar after `start` (naive), in order."""
    if c.cron:
        seconds = len(c.cron.split()) == 6
        it = croniter(c.cron, start, second_at_beginning=seconds)
        while True:
            try:
                yield it.get_next(datetime)
            except (StopIteration, ValueError, OverflowError):  # no further match
                return
            except Exception as exc:  # croniter's CroniterBadDateError: nothing ever matches
                if type(exc).__name__.startswith("Croniter"):
                    return
                raise
    else:
        yield from _rule(c).xafter(start, inc=False)


def _rule(c: Calendar) -> dateutil_rrule.rrule | dateutil_rrule.rruleset:
    """The RRULE (and any EXDATE lines) with DTSTART = start in the zone, all in floating
    wall-clock time: UTC stamps (`...Z`) are turned into the zone's wall time first."""

    def local(m: re.Match[str]) -> str:
        stamp = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return stamp.astimezone(c.zone).strftime("%Y%m%dT%H%M%S")

    text = _UTC_STAMP.sub(local, c.rrule)
    if "DTSTART" in text.upper():
        raise ValueError("DTSTART is the schedule's start_time and may not be given")
    dtstart = c.start.astimezone(c.zone).replace(tzinfo=None)
    rule = dateutil_rrule.rrulestr(text, dtstart=dtstart, forceset=True)
    assert isinstance(rule, dateutil_rrule.rruleset | dateutil_rrule.rrule)
    return rule


def _instants(c: Calendar, wall: datetime) -> list[datetime]:
    """The instants a wall-clock time names, by the calendar's DST rule."""
    first = wall.replace(tzinfo=c.zone, fold=0)
    second = wall.replace(tzinfo=c.zone, fold=1)
    a, b = first.astimezone(UTC), second.astimezone(UTC)
    if a == b:
        return [a]
    exists = a.astimezone(c.zone).replace(tzinfo=None) == wall
    if exists:  # repeated: fold=0 is the first occurrence
        return [a, b] if c.cron and c.wildcard else [a]
    if not c.cron:  # RFC 5545: interpreted with the offset before the gap
        return [a]
    if c.wildcard:  # elapsed time: a wall time that never happens does not fire
        return []
    return [_gap_end(c.zone, b, a)]


def _gap_end(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant the clock jumps forward, between two instants around a gap."""
    offset = after.astimezone(tz).utcoffset()
    lo, hi = int(before.timestamp()), int(after.timestamp()) + 1
    while hi - lo > 1:  # transitions fall on whole seconds
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(tz).utcoffset() == offset:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def jitter(seed: str, limit: timedelta) -> timedelta:
    """A delay in [0, limit) that every replica computes the same for the same fire."""
    if limit <= timedelta(0):
        return timedelta(0)
    digest = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return timedelta(microseconds=digest % int(limit / timedelta(microseconds=1)))


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {description}", [FieldViolation(field, description)])
