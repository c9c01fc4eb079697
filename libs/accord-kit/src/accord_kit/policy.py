"""Asking the policy service for a job's decision, as a service acting for a tenant.

Used by the orchestrator before it stores a job and by the executor before it runs one
directly. Fail closed: when policy cannot be reached the caller does nothing.
"""

from __future__ import annotations

from datetime import timedelta

import grpc

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.policy.v1 import policy_service_pb2, policy_service_pb2_grpc
from accord_kit.auth import acting_for
from accord_kit.config import ServiceSettings
from accord_kit.errors import Unavailable
from accord_kit.transport import open_channel


class PolicyClient:
    def __init__(self, target: str, timeout: float, settings: ServiceSettings) -> None:
        self._channel = open_channel(target, settings)
        self._stub = policy_service_pb2_grpc.PolicyServiceStub(self._channel)
        self._timeout = timeout

    async def evaluate(
        self, tenant: str, spec: job_spec_pb2.JobSpec, job_id: str
    ) -> decision_pb2.PolicyDecision:
        """The binding decision for a job; UNAVAILABLE (nothing stored) when policy is down."""
        try:
            response = await self._stub.EvaluateJob(
                policy_service_pb2.EvaluateJobRequest(spec=spec, job_id=job_id),
                metadata=acting_for(tenant),
                timeout=self._timeout,
                # Ride out a reconnect after a policy restart instead of failing at once.
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"policy service unavailable ({exc.code().name}); nothing was stored or run, "
                "so the call can be retried as it is",
                retry_after=timedelta(seconds=1),
                metadata={"dependency": "policy"},
            ) from exc
        return response.decision

    async def close(self) -> None:
        await self._channel.close(grace=None)
