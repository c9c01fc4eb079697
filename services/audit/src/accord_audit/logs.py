"""Tenant-log use cases: checkpoints, inclusion and consistency proofs, verification, export,
retention. Each call works on one tenant's log; reads of records are in service.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord_audit import store, treestore
from accord_audit.domain import checkpoints, logcheck, merkle
from accord_audit.domain.checkpoints import Checkpoint
from accord_audit.domain.logcheck import WHY, Fault, Level, LogCheck, Part
from accord_audit.domain.records import Record
from accord_audit.signer import Signer, public_bytes
from accord_kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

# Records read per query while exporting: bounds memory, not the range.
CHUNK = 5000
# A verification checks its range in parts, PARTS at once (one connection and one PostgreSQL
# backend each: as many as the database has cores to give), of PART_SMALLEST to PART_LARGEST
# records: one statement each, so the largest bounds how long a statement runs.
PARTS = 2
PART_SMALLEST = 50_000
PART_LARGEST = 250_000


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
        self,
        sessions: async_sessionmaker[AsyncSession],
        reads: asyncpg.Pool,
        signer: Signer,
        origin: str,
    ) -> None:
        """`reads` (db.read_pool) serves proofs, one round trip each; the rest uses sessions."""
        self._sessions = sessions
        self._reads = reads
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
        """Tree size 0 is the latest checkpoint's; the rest is one read (two by event id)."""
        cp = await self.sign(tenant) if tree_size == 0 else None
        size = cp.tree_size if cp else tree_size
        if isinstance(key, str):
            found = await treestore.index_of(self._reads, tenant, key)
            if found is None:
                raise NotFound(f"audit record {key} not found")
            index = found
        else:
            index = key
        wanted = merkle.inclusion_nodes(index, size) if index < size else set()
        log_size, leaf, nodes = await treestore.proof_read(self._reads, tenant, index, wanted)
        if size > log_size:
            raise _past("tree_size", size, log_size)
        if index >= size:
            if cp is not None and isinstance(key, int):
                raise NotFound(f"audit record {index} not found")
            raise _invalid("tree_size", f"must be greater than the record's index {index}")
        if leaf is None:
            raise NotFound(f"audit record {index} not found")
        hashes = merkle.inclusion_proof(index, size, nodes)
        return Inclusion(index, size, leaf, hashes, cp)

    async def consistency(
        self, tenant: str, from_size: int, to_size: int
    ) -> tuple[int, list[bytes]]:
        """(to_size, the proof): to_size 0 is the latest checkpoint's. One read."""
        if to_size == 0:
            to_size = (await self.sign(tenant)).tree_size
        if from_size > to_size:
            raise _invalid("from_size", f"must be at most to_size ({to_size})")
        wanted = merkle.consistency_nodes(from_size, to_size) if from_size < to_size else set()
        log_size, _, nodes = await treestore.proof_read(self._reads, tenant, 0, wanted)
        if to_size > log_size:
            raise _past("to_size", to_size, log_size)
        return to_size, merkle.consistency_proof(from_size, to_size, nodes)

    async def verify(self, tenant: str, start: int, end: int) -> LogCheck:
        """Check the tenant's records [start, end) and its tree over them; end 0 means the end
        of the log.

        The records are checked in PARTS consecutive parts at once, each in one pass in
        PostgreSQL on a connection of its own (so on as many cores), and the stored tree over
        the range beside them; once every record holds, the tree must be their tree, and the
        latest signed checkpoint that ends in the range must have its root."""
        if end and end <= start:
            raise _invalid("end_index", "must be 0 or greater than start_index")
        async with self._sessions() as s:
            size = await treestore.size(s, tenant)
            end = end or size
            if start > size or end > size:
                raise FailedPrecondition(
                    f"range [{start}, {end}) is past the end of the log ({size} records)"
                )
            anchor = await self._prev_hash(s, tenant, start)
        if anchor is None:  # the record before the range is gone: nothing anchors it
            return LogCheck(start).fail(start, WHY[Fault.MISSING])
        if start == end:
            return LogCheck(start)
        cut = logcheck.parts(start, end, PARTS, PART_SMALLEST, PART_LARGEST)
        at_once = asyncio.Semaphore(PARTS)
        async with asyncio.TaskGroup() as group:
            levels = group.create_task(self._levels(tenant, start, end))
            found = [
                group.create_task(
                    self._part(at_once, tenant, lo, hi, anchor if lo == start else None)
                )
                for lo, hi in cut
            ]
        check = LogCheck.of_parts(start, [part.result() for part in found])
        if check.valid:
            await self._check_tree(tenant, start, end, levels.result(), check)
        return check

    async def _part(
        self, at_once: asyncio.Semaphore, tenant: str, start: int, end: int, anchor: bytes | None
    ) -> Part:
        async with at_once, self._sessions.begin() as s:
            return await store.check_part(s, tenant, start, end, anchor)

    async def _levels(self, tenant: str, start: int, end: int) -> list[Level]:
        async with self._sessions.begin() as s:
            return await treestore.levels(s, tenant, start, end)

    async def _check_tree(
        self, tenant: str, start: int, end: int, levels: list[Level], check: LogCheck
    ) -> None:
        """The stored nodes over the range are their children's hashes (so the stored root of
        any size in it is the root recomputed from the checked leaves), and the root of the
        latest checkpoint ending in the range is the one signed.

        A range after 0 takes the nodes before it as stored: that catches a record rewritten
        in the range with its chain, leaf and tree recomputed, which only the signature can;
        a tree changed before the range fails here too, and a check from 0 says where."""
        bad_level = logcheck.first_bad_level(levels)
        async with self._sessions() as s:
            if bad_level is not None:
                index = await treestore.bad_node(s, tenant, bad_level, start, end)
                if index is None:
                    check.missing_nodes(bad_level)
                else:
                    check.bad_node(bad_level, index)
                return
            cp = await treestore.latest_checkpoint(s, tenant, self.log_id(tenant), at_most=end)
            if cp is None or cp.tree_size <= start:
                return
            wanted = merkle.root_nodes(cp.tree_size)
            nodes = (await treestore.nodes(s, {tenant: wanted}))[tenant]
            keys = {key_id: public for key_id, public, _ in await treestore.keys(s)}
        if wanted - nodes.keys():  # checked above; gone since
            check.missing_nodes(max(level for level, _ in wanted - nodes.keys()))
        elif merkle.root(cp.tree_size, nodes) != cp.root_hash:
            check.wrong_root(cp.tree_size, "is not the signed checkpoint's root")
        elif cp.key_id not in keys or not checkpoints.verify(cp, keys[cp.key_id]):
            check.wrong_root(cp.tree_size, "has a checkpoint its key did not sign")

    async def _prev_hash(self, s: AsyncSession, tenant: str, start: int) -> bytes | None:
        if start == 0:
            return bytes(32)
        return await store.tenant_hash_at(s, tenant, start - 1)

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
