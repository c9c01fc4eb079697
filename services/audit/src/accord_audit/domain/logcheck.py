"""Checking a range of one tenant's log: its chain, payload digests and stored Merkle leaves.

The first record that fails is reported with why; records whose payload retention erased are
checked by their digest-based chain and leaf only, and listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from accord_audit.domain import chain, merkle
from accord_audit.domain.records import Record

# How many erased indexes a check reports one by one; the count is always exact.
ERASED_LISTED = 1000


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

    def feed(self, records: Iterable[Record], leaves: Mapping[int, bytes]) -> bool:
        """Check the next records; False once one fails (stop feeding)."""
        for r in records:
            link = r.link
            if link.index != self.next_index:
                return self._fail(self.next_index, "record is missing")
            self.checked += 1
            if link.prev_hash != self.prev_hash:
                return self._fail(link.index, "prev_hash is not the previous record's hash")
            if r.erase_time is not None:
                self.erased_count += 1
                if len(self.erased) < ERASED_LISTED:
                    self.erased.append(link.index)
            elif chain.payload_digest(r.event) != link.payload_digest:
                return self._fail(link.index, "payload does not match payload_digest")
            if chain.tenant_hash(self.prev_hash, link.index, link.payload_digest) != link.hash:
                return self._fail(link.index, "hash does not match the chain")
            if leaves.get(link.index) != merkle.leaf_hash(link.hash):
                return self._fail(link.index, "Merkle leaf does not match the record's hash")
            self.next_index += 1
            self.prev_hash = link.hash
        return True

    def finish(self, end_index: int) -> LogCheck:
        if self.first_invalid is None and self.next_index < end_index:
            self._fail(self.next_index, "record is missing")
        return self
