"""PolicyService and TokenService servicers: map each request to one use case and back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from accord.policy.v1 import policy_service_pb2 as pb
from accord.policy.v1 import policy_service_pb2_grpc, token_service_pb2_grpc
from accord.policy.v1 import token_service_pb2 as tpb
from accord_kit import caller
from accord_policy.requests import Ask, RequestUseCases
from accord_policy.service import PolicyUseCases
from accord_policy.tokens import TokenUseCases

Ctx = grpc.aio.ServicerContext[Any, Any]


class PolicyApi(policy_service_pb2_grpc.PolicyServiceServicer):
    def __init__(self, cases: PolicyUseCases, requests: RequestUseCases) -> None:
        self._cases = cases
        self._requests = requests

    async def CreatePolicy(
        self, request: pb.CreatePolicyRequest, context: Ctx
    ) -> pb.CreatePolicyResponse:
        policy = await self._cases.create(caller.tenant(), request.request_id, request.policy)
        return pb.CreatePolicyResponse(policy=policy)

    async def GetPolicy(self, request: pb.GetPolicyRequest, context: Ctx) -> pb.GetPolicyResponse:
        return pb.GetPolicyResponse(
            policy=await self._cases.get(caller.tenant(), request.policy_id)
        )

    async def ListPolicies(
        self, request: pb.ListPoliciesRequest, context: Ctx
    ) -> pb.ListPoliciesResponse:
        found, token = await self._cases.list_policies(
            caller.tenant(), request.page_size, request.page_token
        )
        return pb.ListPoliciesResponse(policies=found, next_page_token=token)

    async def UpdatePolicy(
        self, request: pb.UpdatePolicyRequest, context: Ctx
    ) -> pb.UpdatePolicyResponse:
        policy = await self._cases.update(
            caller.tenant(), request.policy, request.update_mask, request
        )
        return pb.UpdatePolicyResponse(policy=policy)

    async def DeletePolicy(
        self, request: pb.DeletePolicyRequest, context: Ctx
    ) -> pb.DeletePolicyResponse:
        await self._cases.delete(caller.tenant(), request.policy_id, request.etag, request)
        return pb.DeletePolicyResponse()

    async def EvaluateJob(
        self, request: pb.EvaluateJobRequest, context: Ctx
    ) -> pb.EvaluateJobResponse:
        decision = await self._cases.evaluate_job(
            caller.tenant(), request.spec, request.job_id, request.dry_run
        )
        return pb.EvaluateJobResponse(decision=decision)

    async def EvaluateJobs(
        self, request: pb.EvaluateJobsRequest, context: Ctx
    ) -> pb.EvaluateJobsResponse:
        jobs = [(j.spec, j.job_id) for j in request.jobs]
        decisions = await self._cases.evaluate_jobs(caller.tenant(), jobs, request.dry_run)
        return pb.EvaluateJobsResponse(decisions=decisions)

    async def AcquirePermit(
        self, request: pb.AcquirePermitRequest, context: Ctx
    ) -> pb.AcquirePermitResponse:
        ask = Ask(request.url, request.engine, request.authorization_mode, request.job_id)
        permit = await self._requests.acquire(
            caller.tenant(),
            ask,
            request.wait.ToTimedelta().total_seconds(),
            request.lease.ToTimedelta().total_seconds(),
        )
        response = pb.AcquirePermitResponse(
            granted=permit.granted,
            permit_id=permit.permit_id,
            decision=permit.decision,
            address=permit.address,
        )
        if permit.expire_time is not None:
            response.expire_time.FromDatetime(permit.expire_time)
        if permit.retry_after > 0:
            response.retry_after.FromTimedelta(timedelta(seconds=permit.retry_after))
        return response

    async def ReleasePermit(
        self, request: pb.ReleasePermitRequest, context: Ctx
    ) -> pb.ReleasePermitResponse:
        await self._requests.release(caller.tenant(), request.permit_id)
        return pb.ReleasePermitResponse()

    async def CheckUrl(self, request: pb.CheckUrlRequest, context: Ctx) -> pb.CheckUrlResponse:
        ask = Ask(request.url, request.engine, request.authorization_mode, request.job_id)
        decision, found = await self._requests.check_url(caller.tenant(), ask)
        return pb.CheckUrlResponse(decision=decision, addresses=[str(a) for a in found])

    async def ListRetentions(
        self, request: pb.ListRetentionsRequest, context: Ctx
    ) -> pb.ListRetentionsResponse:
        caller.require_service()
        found, token = await self._cases.retentions(request.page_size, request.page_token)
        response = pb.ListRetentionsResponse(next_page_token=token)
        for tenant, kept in found:
            response.retentions.add(tenant_id=tenant).retention.FromTimedelta(kept)
        return response


class TokenApi(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self, cases: TokenUseCases) -> None:
        self._cases = cases

    async def RevokeToken(
        self, request: tpb.RevokeTokenRequest, context: Ctx
    ) -> tpb.RevokeTokenResponse:
        return tpb.RevokeTokenResponse(
            revoked=await self._cases.revoke(caller.principal(), request)
        )

    async def ListRevokedTokens(
        self, request: tpb.ListRevokedTokensRequest, context: Ctx
    ) -> tpb.ListRevokedTokensResponse:
        revoked, token = await self._cases.listed(caller.principal(), request)
        return tpb.ListRevokedTokensResponse(revoked=revoked, next_page_token=token)
