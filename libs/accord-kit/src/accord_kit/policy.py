"""Asking the policy service for decisions, as a service acting for a tenant.

Used by the orchestrator before it stores jobs, and by the executor before it runs one
directly and before every request it sends. Fail closed: when policy cannot be reached the
caller does nothing. Only a failure to reach it is retryable; any other refusal is the
caller's own fault and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import grpc

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.policy.v1 import policy_service_pb2, policy_service_pb2_grpc
from accord_kit.caller import acting_for
from accord_kit.config import ServiceSettings
from accord_kit.errors import AccordError, Unavailable
from accord_kit.transport import open_channel

# Failures of the hop, not of the request: nothing was decided, so trying again is safe.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class PolicyClient:
    def __init__(self, target: str, timeout: float, settings: ServiceSettings) -> None:
        self._channel = open_channel(target, settings)
        self._stub = policy_service_pb2_grpc.PolicyServiceStub(self._channel)
        self._timeout = timeout

    async def evaluate(
        self, tenant: str, spec: job_spec_pb2.JobSpec, job_id: str
    ) -> decision_pb2.PolicyDecision:
        """The binding decision for a job; UNAVAILABLE (nothing stored) when policy is down."""
        return (await self.evaluate_many(tenant, [(spec, job_id)]))[0]

    async def evaluate_many(
        self, tenant: str, jobs: Sequence[tuple[job_spec_pb2.JobSpec, str]]
    ) -> list[decision_pb2.PolicyDecision]:
        """Binding decisions for up to 1000 jobs of one tenant, in one round trip."""
        request = policy_service_pb2.EvaluateJobsRequest(
            jobs=[
                policy_service_pb2.EvaluateJobsRequest.Item(spec=spec, job_id=job_id)
                for spec, job_id in jobs
            ]
        )
        try:
            response = await self._stub.EvaluateJobs(
                request,
                metadata=acting_for(tenant),
                timeout=self._timeout,
                # Ride out a reconnect after a policy restart instead of failing at once.
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc, "evaluation") from exc
        return list(response.decisions)

    async def acquire(
        self,
        tenant: str,
        request: policy_service_pb2.AcquirePermitRequest,
        timeout: float | None = None,
    ) -> policy_service_pb2.AcquirePermitResponse:
        """The decision on one request and, when allowed and free, its permit and address.

        UNAVAILABLE (nothing may be sent) when policy cannot be reached within `timeout`.
        """
        try:
            response: policy_service_pb2.AcquirePermitResponse = await self._stub.AcquirePermit(
                request,
                metadata=acting_for(tenant),
                timeout=self._timeout if timeout is None else timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc, "request check") from exc
        return response

    async def check_url(
        self, tenant: str, request: policy_service_pb2.CheckUrlRequest
    ) -> policy_service_pb2.CheckUrlResponse:
        """The decision on one URL, without a permit; UNAVAILABLE when policy is unreachable."""
        try:
            response: policy_service_pb2.CheckUrlResponse = await self._stub.CheckUrl(
                request, metadata=acting_for(tenant), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc, "URL check") from exc
        return response

    async def release(self, tenant: str, permit_id: str) -> None:
        """Give a permit's slot back now; a failure only leaves it to its lease."""
        request = policy_service_pb2.ReleasePermitRequest(permit_id=permit_id)
        try:
            await self._stub.ReleasePermit(
                request, metadata=acting_for(tenant), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _failed(exc, "release") from exc

    async def retentions(self, pages: int = 1000) -> dict[str, timedelta]:
        """Each tenant's retention where its policies set one (ListRetentions, every page;
        at most `pages` of them). Raises as the other calls do when policy cannot answer."""
        found: dict[str, timedelta] = {}
        token = ""
        for _ in range(pages):
            request = policy_service_pb2.ListRetentionsRequest(page_token=token)
            try:
                response = await self._stub.ListRetentions(request, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                raise _failed(exc, "retention listing") from exc
            found |= {r.tenant_id: r.retention.ToTimedelta() for r in response.retentions}
            token = response.next_page_token
            if not token:
                break
        return found

    async def close(self) -> None:
        await self._channel.close(grace=None)


def _failed(exc: grpc.aio.AioRpcError, what: str) -> AccordError:
    if exc.code() in TRANSIENT:
        return Unavailable(
            f"policy service unavailable ({exc.code().name}); nothing was stored or "
            "run, so the call can be retried as it is",
            retry_after=timedelta(seconds=1),
            metadata={"dependency": "policy"},
        )
    return AccordError(
        f"the policy service refused the {what} ({exc.code().name})",
        metadata={"dependency": "policy", "code": exc.code().name},
    )
