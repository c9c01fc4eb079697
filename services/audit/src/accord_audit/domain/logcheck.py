"""Checking a range of one tenant's log: its chain, payload digests and stored Merkle leaves.

The first record that fails is reported with why; records whose payload retention erased are
checked by their digest-based chain and leaf only, and listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

# How many erased indexes a check reports one by one; the count is always exact.
ERASED_LISTED = 1000


class Entry(NamedTuple):
    """One record of a tenant log as the store checked it, with its stored Merkle leaf.

    The store recomputes, from the stored row, the payload digest (`payload_ok`, true when
    erased), the chained hash from the row's own prev_hash (`hash_ok`) and the leaf hash
    the record should have (`expected_leaf`); this check links the rows to each other.
    """

    log_index: int
    prev_hash: bytes
    hash: bytes
    erased: bool
    payload_ok: bool
    hash_ok: bool
    expected_leaf: bytes
    leaf: bytes | None


@dataclass
class LogCheck:
    """Feed a tenant's records in index order, chunk by chunk, with their stored leaves."""

    next_index: int
    prev_hash: bytes
    checked: int = 0
    first_invalid: int | None = None
    failure: str = ""
    erased_count: int = 0
    erased: list[int] = field(default_factory=list)

    def _fail(self, index: int, why: str) -> bool:
        self.first_invalid, self.failure = index, why
        return False

    def feed(self, entries: Iterable[Entry]) -> bool:
        """Check the next records; False once one fails (stop feeding)."""
        for e in entries:
            if e.log_index != self.next_index:
                return self._fail(self.next_index, "record is missing")
            self.checked += 1
            if e.prev_hash != self.prev_hash:
                return self._fail(e.log_index, "prev_hash is not the previous record's hash")
            if e.erased:
                self.erased_count += 1
                if len(self.erased) < ERASED_LISTED:
                    self.erased.append(e.log_index)
            elif not e.payload_ok:
                return self._fail(e.log_index, "payload does not match payload_digest")
            if not e.hash_ok:
                return self._fail(e.log_index, "hash does not match the chain")
            if e.leaf is None or e.leaf != e.expected_leaf:
                return self._fail(e.log_index, "Merkle leaf does not match the record's hash")
            self.next_index += 1
            self.prev_hash = e.hash
        return True

    def finish(self, end_index: int) -> LogCheck:
        if self.first_invalid is None and self.next_index < end_index:
            self._fail(self.next_index, "record is missing")
        return self
