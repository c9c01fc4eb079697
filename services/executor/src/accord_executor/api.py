"""ExecutorService servicer: map each request to one use case and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from accord.common.v1 import job_result_pb2
from accord.executor.v1 import executor_service_pb2 as pb
from accord.executor.v1 import executor_service_pb2_grpc
from accord_executor.service import ExecutorUseCases
from accord_kit import caller

Ctx = grpc.aio.ServicerContext[Any, Any]


class ExecutorApi(executor_service_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, cases: ExecutorUseCases) -> None:
        self._cases = cases

    async def RunJob(
        self, request: pb.RunJobRequest, context: Ctx
    ) -> AsyncIterator[pb.RunJobResponse]:
        async for event in self._cases.run_now(caller.tenant(), request.spec):
            if isinstance(event, job_result_pb2.StepResult):
                yield pb.RunJobResponse(step=event)
            else:
                yield pb.RunJobResponse(result=event)

    async def GetArtifact(
        self, request: pb.GetArtifactRequest, context: Ctx
    ) -> AsyncIterator[pb.GetArtifactResponse]:
        ref, chunks = await self._cases.artifact(caller.tenant(), request.artifact_id)
        first = True
        async for chunk in chunks:
            yield pb.GetArtifactResponse(artifact=ref if first else None, chunk=chunk)
            first = False
        if first:  # an empty artifact still answers with its metadata
            yield pb.GetArtifactResponse(artifact=ref)

    async def GetExecutorStatus(
        self, request: pb.GetExecutorStatusRequest, context: Ctx
    ) -> pb.GetExecutorStatusResponse:
        return self._cases.status()
