"""PolicyService servicer: map each request to one use case and back."""

from __future__ import annotations

from typing import Any

import grpc

from accord.policy.v1 import policy_service_pb2 as pb
from accord.policy.v1 import policy_service_pb2_grpc
from accord_kit.caller import tenant_of
from accord_kit.errors import Unimplemented
from accord_policy.service import PolicyUseCases

Ctx = grpc.aio.ServicerContext[Any, Any]


class PolicyApi(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, cases: PolicyUseCases) -> None:
        self._cases = cases

    async def CreatePolicy(
        self, request: pb.CreatePolicyRequest, context: Ctx
    ) -> pb.CreatePolicyResponse:
        policy = await self._cases.create(tenant_of(context), request.request_id, request.policy)
        return pb.CreatePolicyResponse(policy=policy)

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: Ctx) -> pb.GetPolicyResponse:
        return pb.GetPolicyResponse(
            policy=await self._cases.get(tenant_of(context), request.policy_id)
        )

    async def ListPolicies(
        self, request: pb.ListPoliciesRequest, context: Ctx
    ) -> pb.ListPoliciesResponse:
        found, token = await self._cases.list_policies(
            tenant_of(context), request.page_size, request.page_token
        )
        return pb.ListPoliciesResponse(policies=found, next_page_token=token)

    async def UpdatePolicy(
        self, request: pb.UpdatePolicyRequest, context: Ctx
    ) -> pb.UpdatePolicyResponse:
        policy = await self._cases.update(tenant_of(context), request.policy, request.update_mask)
        return pb.UpdatePolicyResponse(policy=policy)

    async def DeletePolicy(
        self, request: pb.DeletePolicyRequest, context: Ctx
    ) -> pb.DeletePolicyResponse:
        await self._cases.delete(tenant_of(context), request.policy_id, request.etag)
        return pb.DeletePolicyResponse()

    async def EvaluateJob(
        self, request: pb.EvaluateJobRequest, context: Ctx
    ) -> pb.EvaluateJobResponse:
        decision = await self._cases.evaluate_job(
            tenant_of(context), request.spec, request.job_id, request.dry_run
        )
        return pb.EvaluateJobResponse(decision=decision)

    async def AcquirePermit(
        self, request: pb.AcquirePermitRequest, context: Ctx
    ) -> pb.AcquirePermitResponse:
        raise Unimplemented("AcquirePermit arrives with shared per-host rate limits")

    async def ReleasePermit(
        self, request: pb.ReleasePermitRequest, context: Ctx
    ) -> pb.ReleasePermitResponse:
        raise Unimplemented("ReleasePermit arrives with shared per-host rate limits")

    async def CheckUrl(self, request: pb.CheckUrlRequest, context: Ctx) -> pb.CheckUrlResponse:
        decision = await self._cases.check_url(
            tenant_of(context),
            request.url,
            request.engine,
            request.authorization_mode,
            request.job_id,
        )
        return pb.CheckUrlResponse(decision=decision)
