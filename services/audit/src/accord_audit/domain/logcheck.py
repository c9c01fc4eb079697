"""Checking a range of one tenant's log: its chain, payload digests, Merkle leaves and tree.

The store checks the records in parts (consecutive sub-ranges, each in one streaming pass in
PostgreSQL) and the stored tree level by level; this module splits the range into parts and
puts their answers together. The first record that fails is reported with why; records whose
payload retention erased are checked by their digest-based chain and leaf only, and listed.
When every record holds, the stored tree nodes over the range must be the hashes of their
children, and the latest signed checkpoint that ends in the range must have their root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

# How many erased indexes a check reports one by one; the count is always exact.
ERASED_LISTED = 1000


class Fault(IntEnum):
    """Why a record fails, in the order a record is checked: the first that applies."""

    MISSING = 1
    PREV_HASH = 2
    PAYLOAD = 3
    HASH = 4
    LEAF = 5


WHY = {
    Fault.MISSING: "record is missing",
    Fault.PREV_HASH: "prev_hash is not the previous record's hash",
    Fault.PAYLOAD: "payload does not match payload_digest",
    Fault.HASH: "hash does not match the chain",
    Fault.LEAF: "Merkle leaf does not match the record's hash",
}


class Bad(NamedTuple):
    """The first failing record of a part: its index, why, and the erased records before it."""

    at: int
    fault: Fault
    erased_before: int
    erased: bool  # the failing record itself is erased


class Part(NamedTuple):
    """What the store found in records [start, end) of the log, checked in one pass.

    `rows` records were read; `erased_indexes` are the part's first erased indexes (up to
    ERASED_LISTED); `bad` is its first failure, if any, where a record missing after the
    part's last row counts too (the store reports it).
    """

    start: int
    end: int
    rows: int
    erased_count: int
    erased_indexes: list[int]
    bad: Bad | None


def parts(start: int, end: int, count: int, smallest: int, largest: int) -> list[tuple[int, int]]:
    """[start, end) cut into consecutive parts of about equal size: at least `count` of them
    (to check them at once) but none under `smallest`, and none over `largest`."""
    size = end - start
    count = max(1, min(count, size // max(1, smallest)), -(-size // largest))
    step = -(-size // count)
    return [(lo, min(end, lo + step)) for lo in range(start, end, step)] or [(start, end)]


class Level(NamedTuple):
    """One level of the stored tree over the range: its nodes, the digest of their hashes
    in index order, and the digest of the parents recomputed from its complete pairs."""

    level: int
    nodes: int
    stored: bytes
    parents: bytes


def first_bad_level(levels: list[Level]) -> int | None:
    """The lowest level whose stored nodes are not the parents recomputed from the level
    below (all of them, in order), or that is missing although the level below has pairs."""
    by_level = {lv.level: lv for lv in levels}
    for lv in range(1, max(by_level, default=0) + 2):
        below, here = by_level.get(lv - 1), by_level.get(lv)
        parents = below.parents if below else None
        if (here.stored if here else None) != parents:
            return lv
    return None


@dataclass
class LogCheck:
    """The answer of a range check."""

    start: int
    checked: int = 0
    first_invalid: int | None = None
    failure: str = ""
    erased_count: int = 0
    erased: list[int] = field(default_factory=list)

    @classmethod
    def of_parts(cls, start: int, found: list[Part]) -> LogCheck:
        """Put the parts' answers together: the first failure of the first part that has one."""
        check = cls(start)
        for part in sorted(found):
            room = ERASED_LISTED - len(check.erased)
            if part.bad is None:
                check.checked += part.rows
                check.erased_count += part.erased_count
                check.erased += part.erased_indexes[:room]
                continue
            bad = part.bad
            # Checked: the records before it, and the failing one unless it is not there.
            check.checked += bad.at - part.start + (bad.fault != Fault.MISSING)
            # Erased records are counted once past the prev_hash check, as a feed would.
            counted = bad.erased_before + (bad.erased and bad.fault > Fault.PREV_HASH)
            check.erased_count += counted
            check.erased += part.erased_indexes[: min(room, counted)]
            check.fail(bad.at, WHY[bad.fault])
            break
        return check

    @property
    def valid(self) -> bool:
        return self.first_invalid is None

    def fail(self, index: int, why: str) -> LogCheck:
        self.first_invalid, self.failure = index, why
        return self

    def bad_node(self, level: int, index: int) -> LogCheck:
        """A stored tree node is not the hash of its children: reported at its first leaf."""
        why = f"Merkle tree node (level {level}, index {index}) is not the hash of its children"
        return self.fail(index << level, why)

    def missing_nodes(self, level: int) -> LogCheck:
        """A level of the stored tree lacks nodes its children make: reported at the start."""
        return self.fail(self.start, f"Merkle tree level {level} is missing nodes")

    def wrong_root(self, size: int, why: str) -> LogCheck:
        """The first `size` records do not make the signed checkpoint of that size."""
        return self.fail(self.start, f"Merkle root of the first {size} records {why}")
