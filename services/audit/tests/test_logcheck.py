"""Putting a range check together from its parts and the stored tree's levels (pure logic)."""

from __future__ import annotations

import itertools

from accord_audit.domain.logcheck import Bad, Fault, Level, LogCheck, Part, first_bad_level, parts


def test_a_range_is_cut_into_parts_that_cover_it_once() -> None:
    assert parts(0, 10, 2, 1, 100) == [(0, 5), (5, 10)]
    assert parts(3, 10, 2, 5, 100) == [(3, 10)]  # too small to share
    assert parts(0, 1_000_000, 2, 50_000, 250_000) == [
        (0, 250_000),
        (250_000, 500_000),
        (500_000, 750_000),
        (750_000, 1_000_000),
    ]
    for start, end in ((0, 1), (7, 1003), (0, 999_999)):
        cut = parts(start, end, 3, 10, 97)
        assert (cut[0][0], cut[-1][1]) == (start, end)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(cut))
        assert all(hi - lo <= 97 for lo, hi in cut)


def test_the_first_failing_part_decides_and_counts_stop_at_its_failure() -> None:
    found = [
        Part(6, 9, 3, 0, [], Bad(7, Fault.PAYLOAD, 0, False)),
        Part(0, 3, 3, 2, [0, 2], None),
        Part(3, 6, 2, 2, [3, 5], Bad(4, Fault.MISSING, 1, False)),
    ]
    check = LogCheck.of_parts(0, found)
    assert (check.first_invalid, check.failure, check.checked) == (4, "record is missing", 4)
    assert (check.erased_count, check.erased) == (3, [0, 2, 3])
    valid = LogCheck.of_parts(0, [Part(0, 3, 3, 1, [1], None), Part(3, 5, 2, 1, [4], None)])
    assert (valid.valid, valid.checked, valid.erased_count, valid.erased) == (True, 5, 2, [1, 4])


def test_an_erased_record_that_fails_after_its_link_is_counted_as_erased() -> None:
    check = LogCheck.of_parts(0, [Part(0, 3, 3, 3, [0, 1, 2], Bad(1, Fault.HASH, 1, True))])
    assert (check.first_invalid, check.checked, check.erased_count, check.erased) == (
        1,
        2,
        2,
        [0, 1],
    )
    linked = LogCheck.of_parts(0, [Part(0, 3, 3, 3, [0, 1, 2], Bad(1, Fault.PREV_HASH, 1, True))])
    assert (linked.erased_count, linked.erased) == (1, [0])


def test_the_lowest_level_that_its_children_do_not_make_is_the_bad_one() -> None:
    good = [Level(0, 4, b"l0", b"p1"), Level(1, 2, b"p1", b"p2"), Level(2, 1, b"p2", None)]
    assert first_bad_level(good) is None
    assert first_bad_level([*good[:1], Level(1, 2, b"x", b"p2"), good[2]]) == 1
    assert first_bad_level([*good[:2], Level(2, 1, b"y", None)]) == 2
    assert first_bad_level(good[:2]) == 2  # level 1 has a pair, level 2 is gone
    assert first_bad_level([]) is None
