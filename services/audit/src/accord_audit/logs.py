"""Tenant-log use cases: checkpoints, inclusion and consistency proofs, verification, export,
retention. Each call works on one tenant's log; reads of records are in service.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord_audit import store, treestore
from accord_audit.domain import checkpoints, merkle
from accord_audit.domain.checkpoints import Checkpoint
from accord_audit.domain.logcheck import LogCheck
from accord_audit.domain.records import Record
from accord_audit.signer import Signer, public_bytes
from accord_kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

# Records read per query while verifying or exporting: bounds memory, not the range.
CHUNK = 5000


def _invalid(field: str, why: str) -> InvalidArgument:
    return InvalidArgument("request is invalid", [FieldViolation(field, why)])


def _past(field: str, size: int, log_size: int) -> FailedPrecondition:
    return FailedPrecondition(f"{field} {size} is past the end of the log ({log_size} records)")


@dataclass(frozen=True)
class Inclusion:
    index: int
    tree_size: int
    leaf: bytes
    hashes: list[bytes]
    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class Exported:
    record: Record
    proof: list[bytes]


class TenantLogs:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], signer: Signer, origin: str
    ) -> None:
        self._sessions = sessions
        self._signer = signer
        self._origin = origin

    def log_id(self, tenant: str) -> str:
        return f"{self._origin}/tenant/{tenant}"

    async def checkpoint(self, tenant: str, tree_size: int = 0) -> Checkpoint:
        """The stored checkpoint of `tree_size`, or (0) the latest, signed now if behind."""
        if tree_size == 0:
            return await self.sign(tenant)
        async with self._sessions() as s:
            found = await treestore.checkpoint_at(s, tenant, self.log_id(tenant), tree_size)
        if found is None:
            raise NotFound(f"no checkpoint of tree size {tree_size}")
        return found

    async def sign(self, tenant: str) -> Checkpoint:
        """The latest checkpoint, after signing one of the log's size if it has grown."""
        log_id = self.log_id(tenant)
        async with self._sessions.begin() as s:
            size = await treestore.size(s, tenant)
            latest = await treestore.latest_checkpoint(s, tenant, log_id)
            if latest is not None and latest.tree_size == size:
                return latest
            nodes = (await treestore.nodes(s, {tenant: merkle.root_nodes(size)}))[tenant]
            root = merkle.root(size, nodes)
            key_id, key = self._signer.current()
            now = datetime.now(UTC)
            made = checkpoints.sign(log_id, size, root, now, key_id, key)
            await treestore.save_key(s, key_id, public_bytes(key), now)
            await treestore.save_checkpoint(s, tenant, made)
            stored = await treestore.checkpoint_at(s, tenant, log_id, size)
        return stored or made

    async def sign_all(self, page: int = 1000, pages: int = 100) -> int:
        """Sign a checkpoint of every tenant log that has grown; how many were signed.

        Page by page: a signed log is no longer behind, so each page is the next tenants; at
        most `pages` pages a pass, so logs that keep growing cannot keep one pass going.
        """
        signed = 0
        for _ in range(pages):
            async with self._sessions() as s:
                behind = await treestore.logs_behind(s, page)
            for tenant in behind:
                await self.sign(tenant)
            signed += len(behind)
            if len(behind) < page:
                break
        return signed

    async def keys(self) -> list[tuple[str, bytes, datetime]]:
        """Every key that has signed, and the current one, which may not have signed yet."""
        key_id, key = self._signer.current()
        async with self._sessions.begin() as s:
            await treestore.save_key(s, key_id, public_bytes(key), datetime.now(UTC))
            return await treestore.keys(s)

    async def inclusion(self, tenant: str, key: int | str, tree_size: int) -> Inclusion:
        """Tree size 0 is the latest checkpoint's; everything else is read in one session."""
        cp = await self.sign(tenant) if tree_size == 0 else None
        size = cp.tree_size if cp else tree_size
        async with self._sessions() as s:
            if isinstance(key, str):
                found = await store.get_by_event_id(s, tenant, key)
                if found is None:
                    raise NotFound(f"audit record {key} not found")
                index = found.link.index
            else:
                index = key
            log_size, leaf = await store.size_and_hash(s, tenant, index)
            if size > log_size:
                raise _past("tree_size", size, log_size)
            if index >= size:
                if cp is not None and isinstance(key, int):
                    raise NotFound(f"audit record {index} not found")
                raise _invalid("tree_size", f"must be greater than the record's index {index}")
            nodes = await treestore.nodes(s, {tenant: merkle.inclusion_nodes(index, size)})
        if leaf is None:
            raise NotFound(f"audit record {index} not found")
        hashes = merkle.inclusion_proof(index, size, nodes[tenant])
        return Inclusion(index, size, leaf, hashes, cp)

    async def consistency(
        self, tenant: str, from_size: int, to_size: int
    ) -> tuple[int, list[bytes]]:
        """(to_size, the proof): to_size 0 is the latest checkpoint's."""
        if to_size == 0:
            to_size = (await self.sign(tenant)).tree_size
        if from_size > to_size:
            raise _invalid("from_size", f"must be at most to_size ({to_size})")
        async with self._sessions() as s:
            log_size, _ = await store.size_and_hash(s, tenant, 0)
            if to_size > log_size:
                raise _past("to_size", to_size, log_size)
            wanted = merkle.consistency_nodes(from_size, to_size) if from_size < to_size else set()
            nodes = (await treestore.nodes(s, {tenant: wanted}))[tenant]
        return to_size, merkle.consistency_proof(from_size, to_size, nodes)

    async def verify(self, tenant: str, start: int, end: int) -> LogCheck:
        """Check the tenant's records [start, end); end 0 means the end of the log."""
        if end and end <= start:
            raise _invalid("end_index", "must be 0 or greater than start_index")
        async with self._sessions() as s:
            size = await treestore.size(s, tenant)
            end = end or size
            if start > size or end > size:
                raise FailedPrecondition(
                    f"range [{start}, {end}) is past the end of the log ({size} records)"
                )
            prev = await self._prev_hash(s, tenant, start)
            if prev is None:  # the record before the range is gone: nothing anchors it
                return LogCheck(start, b"").finish(start + 1)
            check = LogCheck(start, prev)
            while check.next_index < end:
                found = await store.entries(s, tenant, check.next_index, end, CHUNK)
                if not found or not check.feed(found):
                    break
        return check.finish(end)

    async def _prev_hash(self, s: AsyncSession, tenant: str, start: int) -> bytes | None:
        if start == 0:
            return bytes(32)
        before = await store.get_by_index(s, tenant, start - 1, tenant_log=True)
        return before.link.hash if before else None

    async def export(
        self, tenant: str, start: int, end: int, from_size: int
    ) -> tuple[Checkpoint, list[bytes] | None, AsyncIterator[Exported]]:
        """The checkpoint, the consistency proof from `from_size` (if asked) and the records."""
        cp = await self.sign(tenant)
        end = end or cp.tree_size
        if end > cp.tree_size:
            raise FailedPrecondition(f"end_index {end} is past the checkpoint ({cp.tree_size})")
        if start >= end and not (start == end == 0):
            raise _invalid("start_index", f"must be less than end_index ({end})")
        if from_size > cp.tree_size:
            raise FailedPrecondition(f"consistency_from_size {from_size} is past the checkpoint")
        proof = None
        if from_size:
            proof = (await self.consistency(tenant, from_size, cp.tree_size))[1]
        return cp, proof, self._exported(tenant, start, end, cp.tree_size)

    async def _exported(
        self, tenant: str, start: int, end: int, size: int
    ) -> AsyncIterator[Exported]:
        at = start
        while at < end:
            async with self._sessions() as s:
                found = await store.tenant_range(s, tenant, at, end, CHUNK)
                wanted = {
                    tenant: set().union(
                        *(merkle.inclusion_nodes(r.link.index, size) for r in found)
                    )
                }
                nodes = (await treestore.nodes(s, wanted))[tenant]
            if not found:
                return
            for r in found:
                yield Exported(r, merkle.inclusion_proof(r.link.index, size, nodes))
            at = found[-1].link.index + 1

    async def erase_expired(self, retention_days: dict[str, float]) -> int:
        """Erase the payloads past each tenant's retention; how many records were erased."""
        now = datetime.now(UTC)
        erased = 0
        for tenant, days in retention_days.items():
            async with self._sessions.begin() as s:
                erased += await store.erase_before(s, tenant, now - timedelta(days=days), now)
        return erased
