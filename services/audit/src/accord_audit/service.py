"""Audit use cases: append events to the chained log, read it, follow it, verify it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.audit.v1 import audit_service_pb2 as pb
from accord.audit.v2 import audit_service_pb2 as pb2
from accord_audit import store, treestore
from accord_audit.domain import chain, merkle
from accord_audit.domain.records import Event, Record
from accord_kit import pages
from accord_kit.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unavailable,
)

# Records read per query while streaming or verifying: bounds memory, not the range.
CHUNK = 500


class AuditUseCases:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, stream_poll_interval: float
    ) -> None:
        self._sessions = sessions
        self._poll = stream_poll_interval
        self._closing = asyncio.Event()

    def close(self) -> None:
        """End every StreamRecords follower (see `stream`)."""
        self._closing.set()

    async def append(self, events: list[Event]) -> list[Record]:
        """Append events not yet in the log, in order; returns the records added.

        The append lock makes the head read, the duplicate check and the insert one step
        across every replica, so a redelivered event is skipped and no index is reused.
        """
        unique: dict[str, Event] = {}
        for e in events:  # JetStream may hand one event twice in a batch; keep the first
            unique.setdefault(e.event_id, e)
        if not unique:
            return []
        async with self._sessions.begin() as s:
            await store.lock_for_append(s)
            seen = await store.existing_event_ids(s, list(unique))
            fresh = [e for e in unique.values() if e.event_id not in seen]
            head_index, head_hash = await store.head(s) or (-1, chain.GENESIS)
            records = chain.extend(head_index, head_hash, fresh, datetime.now(UTC))
            heads = await treestore.heads(s, {r.event.tenant_id for r in records})
            records, moved = chain.tenant_links(heads, records)
            await store.insert_records(s, records)
            await treestore.insert_nodes(s, await _grow_trees(s, heads, records))
            await treestore.save_heads(s, moved)
        return records

    async def get(self, tenant: str, key: int | str, *, tenant_log: bool = False) -> Record:
        """A record by event id or by index (of the tenant's own log with `tenant_log`)."""
        async with self._sessions() as s:
            if isinstance(key, int):
                found = await store.get_by_index(s, tenant, key, tenant_log=tenant_log)
            else:
                found = await store.get_by_event_id(s, tenant, key)
        if found is None:
            raise NotFound(f"audit record {key} not found")
        return found

    async def list_records(
        self,
        tenant: str,
        request: pb.ListRecordsRequest | pb2.ListRecordsRequest,
        *,
        tenant_log: bool = False,
    ) -> tuple[list[Record], str]:
        f = _filter(tenant, request)
        token_filters = [
            "tenant-log" if tenant_log else "log",
            tenant,
            f.event_type_prefix,
            f.aggregate_id,
            f.event_time_after,
            f.event_time_before,
        ]
        position = pages.decode(request.page_token, token_filters, shape=(pages.INDEX,))
        limit = pages.page_size(request.page_size)
        async with self._sessions() as s:
            found = await store.list_records(
                s, f, position[0] if position else 0, limit + 1, tenant_log=tenant_log
            )
        if len(found) <= limit:
            return found, ""
        last = found[limit]
        return found[:limit], pages.encode(
            [last.link.index if tenant_log else last.index], token_filters
        )

    async def stream(
        self, tenant: str, from_index: int, prefix: str, *, tenant_log: bool = False
    ) -> AsyncIterator[Record]:
        """The tenant's records from `from_index`, then new ones as they are appended.

        Shutdown ends it UNAVAILABLE with the index to resume from, so that a follower
        reconnects (to another replica) instead of holding the drain window open.
        """
        f = store.RecordFilter(tenant, event_type_prefix=prefix)
        while not self._closing.is_set():
            async with self._sessions() as s:
                found = await store.list_records(s, f, from_index, CHUNK, tenant_log=tenant_log)
            for record in found:
                yield record
            if found:
                last = found[-1]
                from_index = (last.link.index if tenant_log else last.index) + 1
            if len(found) < CHUNK:
                # Appends can come from any replica, so the log itself is what is watched.
                # Indexes become visible in order (the append lock is held to commit), so
                # following by index never skips a record.
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                # (the client hanging up), which would leave this loop polling forever.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await self._closing.wait()
        raise Unavailable(
            f"the audit service is shutting down; resume from index {from_index}",
            retry_after=timedelta(seconds=1),
            metadata={"from_index": str(from_index)},
        )

    async def verify(self, start: int, end: int) -> chain.Verification:
        """Recompute the chain over [start, end) of the whole log; end 0 means its end."""
        if end and end <= start:
            raise InvalidArgument(
                "request is invalid",
                [FieldViolation("end_index", "must be 0 or greater than start_index")],
            )
        async with self._sessions() as s:
            size = await store.size(s)
            end = end or size
            if start > size or end > size:
                raise FailedPrecondition(
                    f"range [{start}, {end}) is past the end of the log ({size} records)"
                )
            prev = chain.GENESIS if start == 0 else await store.hash_at(s, start - 1)
            if prev is None:  # the record before the range is gone: nothing can anchor it
                return chain.Verification(start, 0)
            verifier = chain.Verifier(start, prev)
            while verifier.next_index < end:
                found = await store.log_range(s, verifier.next_index, end, CHUNK)
                if not found or not verifier.feed(found):
                    break
        return verifier.finish(end)


async def _grow_trees(
    s: AsyncSession, heads: dict[str, tuple[int, bytes]], records: list[Record]
) -> dict[str, dict[merkle.Node, bytes]]:
    """The tree nodes the new records complete in each of their tenants' trees."""
    leaves: dict[str, list[bytes]] = {}
    for r in records:
        leaves.setdefault(r.event.tenant_id, []).append(r.link.hash)
    sizes = {tenant: heads.get(tenant, (0, b""))[0] for tenant in leaves}
    known = await treestore.nodes(s, {k: merkle.frontier(n) for k, n in sizes.items()})
    return {k: merkle.append(sizes[k], known[k], leaves[k]) for k in leaves}


def _filter(
    tenant: str, request: pb.ListRecordsRequest | pb2.ListRecordsRequest
) -> store.RecordFilter:
    after = before = None
    if request.HasField("event_time_after"):
        after = _time(request.event_time_after, "event_time_after")
    if request.HasField("event_time_before"):
        before = _time(request.event_time_before, "event_time_before")
    if after is not None and before is not None and before <= after:
        raise InvalidArgument(
            "request is invalid",
            [FieldViolation("event_time_before", "must be later than event_time_after")],
        )
    return store.RecordFilter(
        tenant, request.event_type_prefix, request.aggregate_id, after, before
    )


def _time(stamp: timestamp_pb2.Timestamp, field: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            "request is invalid", [FieldViolation(field, "is not a valid timestamp")]
        ) from None
