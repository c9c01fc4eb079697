"""WorkflowService servicer: map each request to one use case and back."""

from __future__ import annotations

from typing import Any

import grpc

from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord.orchestrator.v1 import workflow_service_pb2_grpc
from accord_kit import caller
from accord_orchestrator.workflow_service import WorkflowUseCases

Ctx = grpc.aio.ServicerContext[Any, Any]


class WorkflowApi(workflow_service_pb2_grpc.WorkflowServiceServicer):
    def __init__(self, cases: WorkflowUseCases) -> None:
        self._cases = cases

    async def CreateWorkflow(
        self, request: wsp.CreateWorkflowRequest, context: Ctx
    ) -> wsp.CreateWorkflowResponse:
        found = await self._cases.create(caller.tenant(), request.request_id, request.workflow)
        return wsp.CreateWorkflowResponse(workflow=found)

    async def GetWorkflow(
        self, request: wsp.GetWorkflowRequest, context: Ctx
    ) -> wsp.GetWorkflowResponse:
        found = await self._cases.get(caller.tenant(), request.workflow_id)
        return wsp.GetWorkflowResponse(workflow=found)

    async def ListWorkflows(
        self, request: wsp.ListWorkflowsRequest, context: Ctx
    ) -> wsp.ListWorkflowsResponse:
        found, token = await self._cases.list_workflows(caller.tenant(), request)
        return wsp.ListWorkflowsResponse(workflows=found, next_page_token=token)

    async def UpdateWorkflow(
        self, request: wsp.UpdateWorkflowRequest, context: Ctx
    ) -> wsp.UpdateWorkflowResponse:
        found = await self._cases.update(caller.tenant(), request)
        return wsp.UpdateWorkflowResponse(workflow=found)

    async def DeleteWorkflow(
        self, request: wsp.DeleteWorkflowRequest, context: Ctx
    ) -> wsp.DeleteWorkflowResponse:
        await self._cases.delete(caller.tenant(), request.workflow_id, request)
        return wsp.DeleteWorkflowResponse()

    async def PauseWorkflow(
        self, request: wsp.PauseWorkflowRequest, context: Ctx
    ) -> wsp.PauseWorkflowResponse:
        found = await self._cases.pause(caller.tenant(), request.workflow_id, request.note, request)
        return wsp.PauseWorkflowResponse(workflow=found)

    async def ResumeWorkflow(
        self, request: wsp.ResumeWorkflowRequest, context: Ctx
    ) -> wsp.ResumeWorkflowResponse:
        found = await self._cases.resume(caller.tenant(), request.workflow_id, request)
        return wsp.ResumeWorkflowResponse(workflow=found)

    async def RunWorkflow(
        self, request: wsp.RunWorkflowRequest, context: Ctx
    ) -> wsp.RunWorkflowResponse:
        job_id = await self._cases.run(
            caller.tenant(), request.workflow_id, request.request_id, request
        )
        return wsp.RunWorkflowResponse(job_id=job_id)

    async def ListWorkflowResults(
        self, request: wsp.ListWorkflowResultsRequest, context: Ctx
    ) -> wsp.ListWorkflowResultsResponse:
        found, token = await self._cases.results(caller.tenant(), request)
        return wsp.ListWorkflowResultsResponse(results=found, next_page_token=token)

    async def ListWebhookDeliveries(
        self, request: wsp.ListWebhookDeliveriesRequest, context: Ctx
    ) -> wsp.ListWebhookDeliveriesResponse:
        found, token = await self._cases.deliveries(caller.tenant(), request)
        return wsp.ListWebhookDeliveriesResponse(deliveries=found, next_page_token=token)

    async def TestWebhook(
        self, request: wsp.TestWebhookRequest, context: Ctx
    ) -> wsp.TestWebhookResponse:
        found = await self._cases.test_webhook(
            caller.tenant(), request.workflow_id, request.webhook_id, request.request_id
        )
        return wsp.TestWebhookResponse(delivery=found)
