"""Job use cases: create (policy first, fail closed), read, list, cancel, retry, watch."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2
from accord_kit import pages
from accord_kit.errors import AlreadyExists, FailedPrecondition, NotFound
from accord_kit.policy import PolicyClient
from accord_orchestrator import history, store
from accord_orchestrator.domain import jobs as rules

Sessions = async_sessionmaker[AsyncSession]
# Policy decisions in flight at once for one batch.
POLICY_CONCURRENCY = 32


class JobUseCases:
    def __init__(
        self,
        sessions: Sessions,
        policy: PolicyClient,
        on_queued: Callable[[], None],
        watch_poll: float = 0.2,
    ) -> None:
        self._sessions = sessions
        self._policy = policy
        self._on_queued = on_queued
        self._watch_poll = watch_poll

    async def create(
        self, tenant: str, request_id: str, spec: job_spec_pb2.JobSpec
    ) -> tuple[job_pb2.Job, bool]:
        jobs, created = await self._admit(tenant, [(request_id, spec)])
        return jobs[0], created

    async def create_batch(
        self, tenant: str, request_id: str, specs: Sequence[job_spec_pb2.JobSpec]
    ) -> list[job_pb2.Job]:
        """All or nothing: job i gets request id `<request_id>/<i>`."""
        items = [(f"{request_id}/{i}", spec) for i, spec in enumerate(specs)]
        # A job past the end means an earlier, longer batch used this request_id.
        return (await self._admit(tenant, items, f"{request_id}/{len(specs)}"))[0]

    async def _admit(
        self, tenant: str, items: list[tuple[str, job_spec_pb2.JobSpec]], beyond: str = ""
    ) -> tuple[list[job_pb2.Job], bool]:
        """Decide every spec, then store every job in one transaction (or none)."""
        digests = [_digest(spec) for _, spec in items]
        earlier = await self._earlier(tenant, items, digests, beyond)
        if earlier is not None:
            return earlier, False
        job_ids = [str(uuid.uuid4()) for _ in items]
        decisions = await self._decide(tenant, items, job_ids)
        try:
            async with self._sessions.begin() as s:
                jobs = []
                for (request_id, spec), digest, job_id, decision in zip(
                    items, digests, job_ids, decisions, strict=True
                ):
                    row = await self._insert(s, tenant, request_id, spec, digest, job_id, decision)
                    jobs.append(await store.load_job(s, row))
        except IntegrityError:  # a concurrent call with the same request_id won
            earlier = await self._earlier(tenant, items, digests, beyond)
            assert earlier is not None
            return earlier, False
        if any(job.state == rules.QUEUED for job in jobs):
            self._on_queued()
        return jobs, True

    async def _decide(
        self, tenant: str, items: list[tuple[str, job_spec_pb2.JobSpec]], job_ids: list[str]
    ) -> list[decision_pb2.PolicyDecision]:
        gate = asyncio.Semaphore(POLICY_CONCURRENCY)

        async def one(spec: job_spec_pb2.JobSpec, job_id: str) -> decision_pb2.PolicyDecision:
            async with gate:
                return await self._policy.evaluate(tenant, spec, job_id)

        return list(
            await asyncio.gather(
                *(one(spec, job_id) for (_, spec), job_id in zip(items, job_ids, strict=True))
            )
        )

    async def _earlier(
        self,
        tenant: str,
        items: list[tuple[str, job_spec_pb2.JobSpec]],
        digests: list[str],
        beyond: str,
    ) -> list[job_pb2.Job] | None:
        """The jobs an earlier call created with these request ids, or None if it made none."""
        async with self._sessions() as s:
            rows = await store.find_by_requests(s, tenant, [r for r, _ in items] + [beyond])
            if not rows:
                return None
            same = (
                len(rows) == len(items)
                and beyond not in rows
                and all(rows[r].spec_hash == d for (r, _), d in zip(items, digests, strict=True))
            )
            if not same:
                raise AlreadyExists(
                    "request_id was already used with a different spec",
                    metadata={"job_id": next(iter(rows.values())).job_id},
                )
            return [await store.load_job(s, rows[r]) for r, _ in items]

    async def _insert(
        self,
        s: AsyncSession,
        tenant: str,
        request_id: str,
        spec: job_spec_pb2.JobSpec,
        digest: str,
        job_id: str,
        decision: decision_pb2.PolicyDecision,
    ) -> Any:
        now = store.utcnow()
        allowed = decision.outcome == decision_pb2.DECISION_OUTCOME_ALLOW
        state = rules.QUEUED if allowed else rules.REJECTED
        due = (
            spec.not_before_time.ToDatetime(tzinfo=UTC) if spec.HasField("not_before_time") else now
        )
        message = "" if allowed else "; ".join(r.message for r in decision.reasons)
        await store.insert_job(
            s,
            job_id=job_id,
            tenant_id=tenant,
            request_id=request_id,
            spec=spec.SerializeToString(deterministic=True),
            spec_hash=digest,
            engine=spec.engine,
            priority=spec.priority,
            state=state,
            due_time=max(due, now),
            attempt=0,
            attempt_limit=rules.max_attempts(spec),
            decision=decision.SerializeToString(),
            status_message=message,
            schedule_id="",
            version=1,
            create_time=now,
            update_time=now,
            finish_time=None if allowed else now,
        )
        change = store.Change(
            job_id, tenant, 1, job_pb2.JOB_STATE_UNSPECIFIED, state, 0, message, now
        )
        await history.record(s, [change], decision=decision, request_id=request_id)
        return await store.get_row(s, tenant, job_id)

    async def get(self, tenant: str, job_id: str) -> job_pb2.Job:
        async with self._sessions() as s:
            return await store.load_job(s, await _existing(s, tenant, job_id))

    async def list_jobs(
        self, tenant: str, request: job_service_pb2.ListJobsRequest
    ) -> tuple[list[job_pb2.Job], str]:
        filters = {
            "states": sorted(request.states),
            "schedule_id": request.schedule_id,
            "engine": request.engine,
            "after": _iso(request, "create_time_after"),
            "before": _iso(request, "create_time_before"),
        }
        limit = pages.page_size(request.page_size)
        position = pages.decode(request.page_token, [tenant, filters])
        async with self._sessions() as s:
            found = await store.list_jobs(s, tenant, filters, position, limit + 1)
        if len(found) <= limit:
            return found, ""
        last = found[limit - 1]
        token = pages.encode(
            [last.create_time.ToDatetime(tzinfo=UTC).isoformat(), last.job_id], [tenant, filters]
        )
        return found[:limit], token

    async def cancel(self, tenant: str, job_id: str, reason: str) -> job_pb2.Job:
        async with self._sessions.begin() as s:
            row = await _existing(s, tenant, job_id, lock=True)
            if not rules.can_transition(row.state, rules.CANCELLED):
                raise FailedPrecondition(
                    f"job is {rules.state_name(row.state)} and cannot be cancelled",
                    metadata={"state": rules.state_name(row.state)},
                )
            now = store.utcnow()
            message = reason or "cancelled by client"
            if row.state == rules.RUNNING:
                await store.finish_attempt(
                    s,
                    job_id,
                    row.attempt,
                    job_pb2.ATTEMPT_OUTCOME_CANCELLED,
                    now,
                    "CANCELLED",
                    message,
                )
            await store.set_state(
                s,
                job_id,
                row.version + 1,
                state=rules.CANCELLED,
                status_message=message,
                update_time=now,
                finish_time=now,
            )
            change = store.Change(
                job_id,
                tenant,
                row.version + 1,
                row.state,
                rules.CANCELLED,
                row.attempt,
                message,
                now,
            )
            await history.record(s, [change])
            return await store.load_job(s, await _existing(s, tenant, job_id))

    async def retry(self, tenant: str, job_id: str) -> job_pb2.Job:
        async with self._sessions.begin() as s:
            row = await _existing(s, tenant, job_id, lock=True)
            if row.state not in (rules.FAILED, rules.DEAD_LETTER):
                raise FailedPrecondition(
                    f"only FAILED or DEAD_LETTER jobs can be retried; job is "
                    f"{rules.state_name(row.state)}",
                    metadata={"state": rules.state_name(row.state)},
                )
            now = store.utcnow()
            limit = row.attempt + rules.max_attempts(job_spec_pb2.JobSpec.FromString(row.spec))
            await store.set_state(
                s,
                job_id,
                row.version + 1,
                state=rules.QUEUED,
                due_time=now,
                attempt_limit=limit,
                status_message="",
                update_time=now,
                finish_time=None,
            )
            change = store.Change(
                job_id,
                tenant,
                row.version + 1,
                row.state,
                rules.QUEUED,
                row.attempt,
                "retried by client",
                now,
            )
            await history.record(s, [change])
            job = await store.load_job(s, await _existing(s, tenant, job_id))
        self._on_queued()
        return job

    async def watch(
        self, tenant: str, job_id: str, after: int
    ) -> AsyncIterator[tuple[job_pb2.JobStateChange, job_pb2.Job]]:
        """Changes after `after`, then follow until the job is terminal."""
        while True:
            async with self._sessions() as s:
                row = await _existing(s, tenant, job_id)
                rows = await store.changes_after(s, job_id, after)
                job = await store.load_job(s, row) if rows else None
            for c in rows:
                change = history.to_change(
                    store.Change(
                        job_id,
                        tenant,
                        c.version,
                        c.previous_state,
                        c.state,
                        c.attempt,
                        c.message,
                        c.change_time,
                    )
                )
                assert job is not None
                yield change, job
                after = c.version
            if row.state in rules.TERMINAL and after >= row.version:
                return
            await asyncio.sleep(self._watch_poll)


def _digest(spec: job_spec_pb2.JobSpec) -> str:
    return hashlib.sha256(spec.SerializeToString(deterministic=True)).hexdigest()


async def _existing(s: AsyncSession, tenant: str, job_id: str, *, lock: bool = False) -> Any:
    row = await store.get_row(s, tenant, job_id, lock=lock)
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return row


def _iso(request: job_service_pb2.ListJobsRequest, field: str) -> str:
    if not request.HasField(field):  # type: ignore[arg-type]
        return ""
    return str(getattr(request, field).ToDatetime(tzinfo=UTC).isoformat())
