"""Job use cases: create (policy first, fail closed), read, list, cancel, retry, watch."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2
from accord_kit import caller, idempotency, jobspec, metrics, pages, tracing
from accord_kit.errors import AccordError, AlreadyExists, FieldViolation, InvalidArgument, NotFound
from accord_kit.policy import PolicyClient
from accord_orchestrator import history, store
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as rules
from accord_orchestrator.domain.pollers import Pollers, waiting_message

# Every hop carries 16 MiB messages: a spec of 4 MiB fits a lease batch, a batch of 8 MiB
# of specs fits the response that echoes it.
MAX_SPEC_BYTES = 4 * 1024 * 1024
MAX_BATCH_BYTES = 8 * 1024 * 1024
# CreateJob calls of one caller admitted together at most (the policy's batch limit).
MAX_COALESCED = 1000
JOB = job_pb2.Job


@dataclass
class _Ask:
    """One CreateJob call waiting for the batch it joined."""

    request_id: str
    spec: job_spec_pb2.JobSpec
    blob: bytes
    digest: str
    answer: asyncio.Future[tuple[job_pb2.Job, bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # The asking call's trace: its job joins it, whichever call's batch stores the job.
    traceparent: str = field(default_factory=tracing.traceparent)

    @property
    def item(self) -> tuple[str, job_spec_pb2.JobSpec, bytes, str]:
        return (self.request_id, self.spec, self.blob, self.digest)

    def settle(self, outcome: tuple[job_pb2.Job, bool] | Exception) -> None:
        if self.answer.done():
            return
        if isinstance(outcome, Exception):
            self.answer.set_exception(outcome)
            self.answer.exception()  # retrieved here, in case its caller already gave up
        else:
            self.answer.set_result(outcome)


class JobUseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        policy: PolicyClient,
        on_queued: Callable[[], None],
        watch_poll: float = 0.2,
        pollers: Pollers | None = None,
    ) -> None:
        self._pollers = pollers
        self._engine = engine
        self._policy = policy
        self._on_queued = on_queued
        self._watch_poll = watch_poll
        self._waiting: dict[tuple[str, str], list[_Ask]] = {}
        self._draining: set[tuple[str, str]] = set()
        self._drains: set[asyncio.Task[None]] = set()

    async def create(
        self, tenant: str, request_id: str, spec: job_spec_pb2.JobSpec
    ) -> tuple[job_pb2.Job, bool]:
        """Admit one job. Calls that arrive while a batch of the same caller is being decided
        and stored wait and go together as the next batch: one policy round trip and one
        transaction for all of them (group commit), so the cost per job falls as load rises.
        """
        jobspec.check([("spec.", spec)])
        [blob] = _encode([(request_id, spec)])
        ask = _Ask(request_id, spec, blob, _sha256(blob))
        principal = caller.current()
        key = (tenant, principal.subject if principal else "")
        self._waiting.setdefault(key, []).append(ask)
        if key not in self._draining:
            self._draining.add(key)
            # The task copies this call's context, so events name this caller as their actor;
            # the key keeps other callers' jobs out of its batches.
            drain = asyncio.create_task(self._drain(tenant, key))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        # Shielded: one caller giving up must not cancel a batch that holds other calls.
        return await asyncio.shield(ask.answer)

    async def _drain(self, tenant: str, key: tuple[str, str]) -> None:
        try:
            while asks := self._waiting.pop(key, []):
                if len(asks) > MAX_COALESCED:
                    self._waiting[key] = asks[MAX_COALESCED:] + self._waiting.get(key, [])
                    asks = asks[:MAX_COALESCED]
                try:
                    await self._admit_asks(tenant, asks)
                except Exception as exc:  # every waiting caller gets the batch's error
                    for ask in asks:
                        ask.settle(exc)
        finally:
            self._draining.discard(key)

    async def _admit_asks(self, tenant: str, asks: list[_Ask]) -> None:
        """Answer each ask: the job an earlier call made with its request id, or a new one."""
        first: dict[str, _Ask] = {}
        for ask in asks:
            first.setdefault(ask.request_id, ask)
        async with self._engine.connect() as s:
            rows = await store.find_by_requests(s, tenant, list(first))
            earlier = await store.load_jobs(s, list(rows.values()))
        outcome: dict[str, tuple[job_pb2.Job, bool] | Exception] = {
            job.request_id: (job, False) for job in earlier
        }
        fresh = [a for r, a in first.items() if r not in rows]
        try:
            made = await self._store(
                tenant, [a.item for a in fresh], parents=[a.traceparent for a in fresh]
            )
            outcome |= {job.request_id: (job, True) for job in made}
        except IntegrityError:  # another replica stored one of these ids meanwhile: one by one
            for a in fresh:
                try:
                    [job], created = await self._admit(tenant, [(a.request_id, a.spec)])
                    outcome[a.request_id] = (job, created)
                except AccordError as exc:
                    outcome[a.request_id] = exc
        for ask in asks:
            result = outcome[ask.request_id]
            if isinstance(result, Exception):
                ask.settle(result)
                continue
            job, created = result
            if ask.digest != _sha256(job.spec.SerializeToString(deterministic=True)):
                ask.settle(
                    AlreadyExists(
                        "request_id was already used with a different spec",
                        metadata={"job_id": job.job_id},
                    )
                )
            else:
                ask.settle((job, created and first[ask.request_id] is ask))

    async def create_batch(
        self, tenant: str, request_id: str, specs: Sequence[job_spec_pb2.JobSpec]
    ) -> list[job_pb2.Job]:
        """All or nothing: job i gets request id `<request_id>/<i>`."""
        jobspec.check((f"specs[{i}].", spec) for i, spec in enumerate(specs))
        items = [(f"{request_id}/{i}", spec) for i, spec in enumerate(specs)]
        # A job past the end means an earlier, longer batch used this request_id.
        return (await self._admit(tenant, items, f"{request_id}/{len(specs)}"))[0]

    async def _admit(
        self, tenant: str, items: list[tuple[str, job_spec_pb2.JobSpec]], beyond: str = ""
    ) -> tuple[list[job_pb2.Job], bool]:
        """Admit all of `items` or none, unless an earlier call made exactly these jobs."""
        encoded = _encode(items)
        digests = [_sha256(blob) for blob in encoded]
        earlier = await self._earlier(tenant, items, digests, beyond)
        if earlier is not None:
            return earlier, False
        try:
            return await self._store(
                tenant,
                [
                    (r, spec, blob, d)
                    for (r, spec), blob, d in zip(items, encoded, digests, strict=True)
                ],
            ), True
        except IntegrityError:  # a concurrent call with the same request_id won
            earlier = await self._earlier(tenant, items, digests, beyond)
            assert earlier is not None
            return earlier, False

    async def create_scheduled(
        self, tenant: str, fires: Sequence[tuple[str, job_spec_pb2.JobSpec, str]]
    ) -> dict[str, job_pb2.Job]:
        """Jobs of schedule fires, `(request_id, spec, schedule_id)`, admitted like CreateJob:
        the job each request id already has, else a new one. A fire's request id names its
        schedule and nominal time, so replicas firing the same fire get the same job."""
        found: dict[str, job_pb2.Job] = {}
        fresh = list(fires)  # usually none exists yet: store first, look up only on a clash
        for _ in range(3):
            try:
                blobs = _encode([(r, spec) for r, spec, _ in fresh])
                made = await self._store(
                    tenant,
                    [
                        (r, spec, blob, _sha256(blob))
                        for (r, spec, _), blob in zip(fresh, blobs, strict=True)
                    ],
                    [schedule_id for _, _, schedule_id in fresh],
                )
                return found | {j.request_id: j for j in made}
            except IntegrityError:  # another replica stored some of them: take those
                async with self._engine.connect() as s:
                    rows = await store.find_by_requests(s, tenant, [r for r, _, _ in fires])
                    earlier = await store.load_jobs(s, list(rows.values()))
                found = {j.request_id: j for j in earlier}
                fresh = [f for f in fires if f[0] not in found]
        raise AccordError("schedule fires kept colliding with another replica's")

    async def _store(
        self,
        tenant: str,
        items: list[tuple[str, job_spec_pb2.JobSpec, bytes, str]],
        schedule_ids: Sequence[str] = (),
        parents: Sequence[str] = (),
    ) -> list[job_pb2.Job]:
        """Decide every spec in one policy call, then store every job in one transaction.
        Raises IntegrityError, storing nothing, when a request id is already taken."""
        if not items:
            return []
        job_ids = [str(uuid.uuid4()) for _ in items]
        decisions = await self._policy.evaluate_many(
            tenant, [(item[1], job_id) for item, job_id in zip(items, job_ids, strict=True)]
        )
        now = store.utcnow()
        traces = parents or [""] * len(items)  # "": the current span's trace
        admitted = [
            _admission(tenant, job_id, item[1], decision, now, parent)
            for item, job_id, decision, parent in zip(
                items, job_ids, decisions, traces, strict=True
            )
        ]
        rows = [
            _row(tr.job, request_id, blob, digest, spec.engine, decision, now)
            for tr, (request_id, spec, blob, digest), decision in zip(
                admitted, items, decisions, strict=True
            )
        ]
        for row, schedule_id in zip(rows, schedule_ids, strict=False):
            row["schedule_id"] = schedule_id
        async with self._engine.begin() as s:
            await store.insert_jobs(s, rows)
            await history.record(
                s,
                [tr.change for tr in admitted],
                {
                    tr.job.job_id: (decision, item[0])
                    for tr, decision, item in zip(admitted, decisions, items, strict=True)
                },
                {row["job_id"]: row["schedule_id"] for row in rows if row["schedule_id"]},
            )
        if any(tr.job.state == rules.QUEUED for tr in admitted):
            self._on_queued()
        return [store.to_job(SimpleNamespace(**row)) for row in rows]

    async def _earlier(
        self,
        tenant: str,
        items: list[tuple[str, job_spec_pb2.JobSpec]],
        digests: list[str],
        beyond: str,
    ) -> list[job_pb2.Job] | None:
        """The jobs an earlier call created with these request ids, or None if it made none."""
        async with self._engine.connect() as s:
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
            return await store.load_jobs(s, [rows[r] for r, _ in items])

    async def get(self, tenant: str, job_id: str) -> job_pb2.Job:
        async with self._engine.connect() as s:
            return self._say_why_waiting([await _loaded(s, tenant, job_id)])[0]

    def _say_why_waiting(self, found: list[job_pb2.Job]) -> list[job_pb2.Job]:
        """A queued job no running executor can take says so in its status message."""
        if self._pollers is None:
            return found
        now = time.monotonic()
        for job in found:
            engine = job.spec.engine
            if job.state == job_pb2.JOB_STATE_QUEUED and self._pollers.stranded(engine, now):
                job.status_message = job.status_message or waiting_message(engine)
        return found

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
        position = pages.decode(
            request.page_token, [tenant, filters], shape=(pages.TIME, pages.UUID)
        )
        async with self._engine.connect() as s:
            found = self._say_why_waiting(
                await store.list_jobs(s, tenant, filters, position, limit + 1)
            )
        if len(found) <= limit:
            return found, ""
        last = found[limit - 1]
        token = pages.encode(
            [last.create_time.ToDatetime(tzinfo=UTC).isoformat(), last.job_id], [tenant, filters]
        )
        return found[:limit], token

    async def cancel(
        self, tenant: str, job_id: str, reason: str, asked: idempotency.Asked | None = None
    ) -> job_pb2.Job:
        """Cancel; a repeat of `asked`'s request id returns the first answer."""
        async with self._engine.begin() as s:
            done = await idempotency.recall(s, t.outcomes, "job.cancel", tenant, asked, JOB)
            if done is not None:
                return done
            job = await _locked(s, tenant, job_id)
            await history.commit(s, [rules.cancel(job, store.utcnow(), reason)])
            found = await _loaded(s, tenant, job_id)
            await idempotency.keep(s, t.outcomes, "job.cancel", tenant, asked, found)
            return found

    async def retry(
        self, tenant: str, job_id: str, asked: idempotency.Asked | None = None
    ) -> job_pb2.Job:
        """Queue again; a repeat of `asked`'s request id returns the first answer."""
        async with self._engine.begin() as s:
            done = await idempotency.recall(s, t.outcomes, "job.retry", tenant, asked, JOB)
            if done is not None:
                return done
            job = await _locked(s, tenant, job_id)
            spec = (await store.specs(s, [job_id]))[job_id]
            await history.commit(s, [rules.retry(job, store.utcnow(), spec)])
            found = await _loaded(s, tenant, job_id)
            await idempotency.keep(s, t.outcomes, "job.retry", tenant, asked, found)
        metrics.RETRIES.labels("manual").inc()
        self._on_queued()
        return found

    async def watch(
        self, tenant: str, job_id: str, after: int
    ) -> AsyncIterator[tuple[job_pb2.JobStateChange, job_pb2.Job]]:
        """Changes after `after`, then follow until the job is terminal."""
        while True:
            async with self._engine.connect() as s:
                job = await _loaded(s, tenant, job_id)
                changes = await store.changes_after(s, job_id, after)
            for c in changes:
                change = history.to_change(c)
                yield change, rules.as_of(job, change)
                after = c.version
            if job.state in rules.TERMINAL and after >= job.version:
                return
            await asyncio.sleep(self._watch_poll)


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _encode(items: list[tuple[str, job_spec_pb2.JobSpec]]) -> list[bytes]:
    """Each spec, encoded deterministically; refused whole when a spec or the batch is too
    large for every hop to carry (the limits in job_spec.proto and job_service.proto)."""
    encoded = [spec.SerializeToString(deterministic=True) for _, spec in items]
    big = [i for i, blob in enumerate(encoded) if len(blob) > MAX_SPEC_BYTES]
    if big:
        field = "spec" if len(items) == 1 else f"specs[{big[0]}]"
        raise InvalidArgument(
            "a job spec is larger than 4 MiB encoded",
            [FieldViolation(field, f"encoded size must be at most {MAX_SPEC_BYTES} bytes")],
        )
    if sum(map(len, encoded)) > MAX_BATCH_BYTES:
        raise InvalidArgument(
            "the batch's specs add up to more than 8 MiB encoded",
            [FieldViolation("specs", f"encoded sizes must add up to at most {MAX_BATCH_BYTES}")],
        )
    return encoded


def _admission(
    tenant: str,
    job_id: str,
    spec: job_spec_pb2.JobSpec,
    decision: decision_pb2.PolicyDecision,
    now: datetime,
    parent: str = "",
) -> rules.Transition:
    due = spec.not_before_time.ToDatetime(tzinfo=UTC) if spec.HasField("not_before_time") else now
    return rules.admit(
        job_id,
        tenant,
        spec,
        allowed=decision.outcome == decision_pb2.DECISION_OUTCOME_ALLOW,
        message="; ".join(r.message for r in decision.reasons),
        due=due,
        now=now,
        traceparent=tracing.mark("job.admit", parent, {"accord.job_id": job_id}),
    )


def _row(
    job: rules.Job,
    request_id: str,
    spec: bytes,
    digest: str,
    engine: int,
    decision: decision_pb2.PolicyDecision,
    now: datetime,
) -> dict[str, Any]:
    """The `jobs` row of a newly admitted job."""
    return {
        "job_id": job.job_id,
        "tenant_id": job.tenant_id,
        "request_id": request_id,
        "spec": spec,
        "spec_hash": digest,
        "engine": engine,
        "priority": job.priority,
        "state": job.state,
        "due_time": job.due_time,
        "attempt": job.attempt,
        "attempt_limit": job.attempt_limit,
        "lease_worker": None,
        "lease_deadline": None,
        "decision": decision.SerializeToString(),
        "result": None,
        "status_message": job.status_message,
        "schedule_id": "",
        "version": job.version,
        "create_time": now,
        "update_time": now,
        "finish_time": job.finish_time,
        "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit,
        "traceparent": job.traceparent,
    }


async def _locked(s: AsyncConnection, tenant: str, job_id: str) -> rules.Job:
    job = (await store.lock(s, [job_id], tenant=tenant)).get(job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


async def _loaded(s: AsyncConnection, tenant: str, job_id: str) -> job_pb2.Job:
    row = await store.get_row(s, tenant, job_id)
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return (await store.load_jobs(s, [row]))[0]


def _iso(request: job_service_pb2.ListJobsRequest, field: str) -> str:
    if not request.HasField(field):  # type: ignore[arg-type]
        return ""
    return str(getattr(request, field).ToDatetime(tzinfo=UTC).isoformat())
