"""Reporting outcomes to WorkerService: batched completions, failures, retries.

Reports are fenced by attempt at the orchestrator: a completion it lists as stale, or a
failure it refuses ABORTED, means the lease went stale (expired and re-leased, or
cancelled) and the work is dropped. UNAVAILABLE is retried
with a bounded backoff. Results carry text read off the web, so each report is scrubbed to
the contract first (NUL replaced, strings cut to their limits); a batch the orchestrator
still refuses as invalid is sent again one completion at a time, and a completion refused
alone is reported as the attempt's failure (`RESULT_REFUSED`) instead of being lost.
Each call carries the tenant it is made for as `accord-tenant`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import grpc
import structlog

from accord.common.v1 import job_result_pb2
from accord.orchestrator.v1 import worker_service_pb2 as w
from accord.orchestrator.v1 import worker_service_pb2_grpc
from accord_executor.domain import results as r
from accord_kit import wellformed
from accord_kit.auth import acting_for
from accord_kit.backoff import Backoff

log = structlog.get_logger("accord.executor.reports")

T = TypeVar("T")

# Completions that finish within this window go out in one CompleteTask call.
BATCH_WINDOW_SECONDS = 0.005
MAX_BATCH = 500
MAX_BATCH_BYTES = 8 * 1024 * 1024  # under the orchestrator's 16 MiB message limit
RPC_TIMEOUT_SECONDS = 30.0
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass
class _Completion:
    tenant: str
    completion: w.TaskCompletion
    reported: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self) -> None:
        if not self.reported.done():
            self.reported.set_result(None)


class Reporter:
    def __init__(
        self, stub: worker_service_pb2_grpc.WorkerServiceAsyncStub, worker_id: str
    ) -> None:
        self._stub = stub
        self._worker_id = worker_id
        self._completions: asyncio.Queue[_Completion] = asyncio.Queue()

    async def complete(
        self, tenant: str, lease: w.LeaseRef, result: job_result_pb2.JobResult
    ) -> None:
        """Queue the completion for the next batch and wait until it was reported."""
        completion = w.TaskCompletion(lease=lease, result=result)
        wellformed.scrub(completion)
        done = _Completion(tenant, completion)
        self._completions.put_nowait(done)
        await done.reported

    async def fail(
        self, tenant: str, lease: w.LeaseRef, failure: r.Failure, so_far: job_result_pb2.JobResult
    ) -> None:
        request = w.FailTaskRequest(
            worker_id=self._worker_id,
            lease=lease,
            error_code=failure.code,
            error_message=failure.message[:4096],
            retryable=failure.retryable,
            partial_result=so_far,
        )
        wellformed.scrub(request)
        call = partial(
            self._stub.FailTask,
            request,
            metadata=acting_for(tenant),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        try:
            await self._call(call)
        except grpc.aio.AioRpcError as exc:
            level = log.warning if exc.code() == grpc.StatusCode.ABORTED else log.error
            level("worker.fail_not_reported", job_id=lease.job_id, error=describe(exc))

    async def run(self) -> None:
        while True:
            batch = await self._next_batch()
            by_tenant: dict[str, list[_Completion]] = {}
            for item in batch:
                by_tenant.setdefault(item.tenant, []).append(item)
            for tenant, items in by_tenant.items():
                try:
                    await self._send_completions(tenant, items)
                except Exception:
                    log.exception("worker.complete_crashed")
                finally:
                    for item in items:
                        item.settle()

    async def _next_batch(self) -> list[_Completion]:
        """The next completion and all that follow within the batch window."""
        batch = [await self._completions.get()]
        size = batch[0].completion.ByteSize()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BATCH_WINDOW_SECONDS
        while len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES:
            try:
                if self._completions.empty():
                    async with asyncio.timeout_at(deadline):
                        item = await self._completions.get()
                else:
                    item = self._completions.get_nowait()
            except TimeoutError:
                break
            batch.append(item)
            size += item.completion.ByteSize()
        return batch

    async def _send_completions(self, tenant: str, items: list[_Completion]) -> None:
        """One CompleteTask for the batch; each stale lease is refused alone, and dropped."""
        request = w.CompleteTaskRequest(
            worker_id=self._worker_id, completions=[p.completion for p in items]
        )
        call = partial(
            self._stub.CompleteTask,
            request,
            metadata=acting_for(tenant),
            timeout=RPC_TIMEOUT_SECONDS,
        )
        try:
            response = await self._call(call)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                log.error("worker.complete_not_reported", error=describe(exc))
            elif len(items) > 1:
                for item in items:  # find the one the contract refuses; report the rest
                    await self._send_completions(tenant, [item])
            else:
                await self._refused(tenant, items[0].completion, exc)
            return
        if response.stale_leases:
            stale = sorted(_lease_text(x) for x in response.stale_leases)
            log.warning("worker.stale_leases", leases=stale)

    async def _refused(
        self, tenant: str, completion: w.TaskCompletion, exc: grpc.aio.AioRpcError
    ) -> None:
        log.error("worker.result_refused", job_id=completion.lease.job_id, error=describe(exc))
        failure = r.Failure(
            r.RESULT_REFUSED, f"the orchestrator refused the result: {exc.details()}"
        )
        await self.fail(tenant, completion.lease, failure, job_result_pb2.JobResult())

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry while the orchestrator is unreachable; other errors go to the caller."""
        backoff = Backoff()
        while True:
            try:
                return await call()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in TRANSIENT:
                    raise
                delay = backoff.next()
                log.warning("worker.report_retry", error=describe(exc), retry_in=round(delay, 3))
                await asyncio.sleep(delay)


def _lease_text(lease: w.LeaseRef) -> str:
    return f"{lease.job_id}#{lease.attempt}"


def describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return repr(exc)
