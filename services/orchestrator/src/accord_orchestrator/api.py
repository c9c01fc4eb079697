"""JobService and WorkerService servicers: map each request to one use case and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from accord.orchestrator.v1 import job_service_pb2 as jobs
from accord.orchestrator.v1 import job_service_pb2_grpc, worker_service_pb2_grpc
from accord.orchestrator.v1 import worker_service_pb2 as work
from accord_kit import caller
from accord_orchestrator.domain.jobs import Lease
from accord_orchestrator.queue import QueueUseCases
from accord_orchestrator.service import JobUseCases

Ctx = grpc.aio.ServicerContext[Any, Any]


class JobApi(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, cases: JobUseCases) -> None:
        self._cases = cases

    async def CreateJob(
        self, request: jobs.CreateJobRequest, context: Ctx
    ) -> jobs.CreateJobResponse:
        job, created = await self._cases.create(caller.tenant(), request.request_id, request.spec)
        return jobs.CreateJobResponse(job=job, created=created)

    async def BatchCreateJobs(
        self, request: jobs.BatchCreateJobsRequest, context: Ctx
    ) -> jobs.BatchCreateJobsResponse:
        found = await self._cases.create_batch(caller.tenant(), request.request_id, request.specs)
        return jobs.BatchCreateJobsResponse(jobs=found)

    async def GetJob(self, request: jobs.GetJobRequest, context: Ctx) -> jobs.GetJobResponse:
        return jobs.GetJobResponse(job=await self._cases.get(caller.tenant(), request.job_id))

    async def ListJobs(self, request: jobs.ListJobsRequest, context: Ctx) -> jobs.ListJobsResponse:
        found, token = await self._cases.list_jobs(caller.tenant(), request)
        return jobs.ListJobsResponse(jobs=found, next_page_token=token)

    async def CancelJob(
        self, request: jobs.CancelJobRequest, context: Ctx
    ) -> jobs.CancelJobResponse:
        job = await self._cases.cancel(caller.tenant(), request.job_id, request.reason, request)
        return jobs.CancelJobResponse(job=job)

    async def RetryJob(self, request: jobs.RetryJobRequest, context: Ctx) -> jobs.RetryJobResponse:
        job = await self._cases.retry(caller.tenant(), request.job_id, request)
        return jobs.RetryJobResponse(job=job)

    async def WatchJob(
        self, request: jobs.WatchJobRequest, context: Ctx
    ) -> AsyncIterator[jobs.WatchJobResponse]:
        changes = self._cases.watch(caller.tenant(), request.job_id, request.after_version)
        async for change, job in changes:
            yield jobs.WatchJobResponse(change=change, job=job)


class WorkerApi(worker_service_pb2_grpc.WorkerServiceServicer):
    def __init__(self, queue: QueueUseCases) -> None:
        self._queue = queue

    async def PollTasks(
        self, request: work.PollTasksRequest, context: Ctx
    ) -> work.PollTasksResponse:
        caller.require_service()  # the queue spans tenants
        tasks = await self._queue.poll(
            request.worker_id,
            request.max_tasks,
            list(request.engines),
            request.wait.ToTimedelta(),
            request.lease_duration.ToTimedelta(),
        )
        return work.PollTasksResponse(tasks=tasks)

    async def Heartbeat(
        self, request: work.HeartbeatRequest, context: Ctx
    ) -> work.HeartbeatResponse:
        caller.require_service()  # the queue spans tenants
        cancelled, lost, deadline = await self._queue.heartbeat(
            request.worker_id,
            [_lease(x) for x in request.leases],
            request.lease_duration.ToTimedelta(),
        )
        response = work.HeartbeatResponse(
            cancelled=[_ref(x) for x in cancelled], lost=[_ref(x) for x in lost]
        )
        response.lease_deadline_time.FromDatetime(deadline)
        return response

    async def CompleteTask(
        self, request: work.CompleteTaskRequest, context: Ctx
    ) -> work.CompleteTaskResponse:
        caller.require_service()  # the queue spans tenants
        stale = await self._queue.complete(
            request.worker_id, [(_lease(c.lease), c.result) for c in request.completions]
        )
        return work.CompleteTaskResponse(stale_leases=[_ref(x) for x in stale])

    async def FailTask(self, request: work.FailTaskRequest, context: Ctx) -> work.FailTaskResponse:
        caller.require_service()  # the queue spans tenants
        state, retry_time = await self._queue.fail(
            request.worker_id,
            _lease(request.lease),
            request.error_code,
            request.error_message,
            request.retryable,
            request.partial_result,
        )
        response = work.FailTaskResponse(next_state=state)  # type: ignore[arg-type]
        if retry_time is not None:
            response.retry_time.FromDatetime(retry_time)
        return response


def _lease(ref: work.LeaseRef) -> Lease:
    return Lease(ref.job_id, ref.attempt)


def _ref(lease: Lease) -> work.LeaseRef:
    return work.LeaseRef(job_id=lease.job_id, attempt=lease.attempt)
