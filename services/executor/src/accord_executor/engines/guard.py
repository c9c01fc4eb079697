"""Asking the policy service before each request an engine sends, and keeping the answer.

One AcquirePermit call per request: the decision, the permit and the checked address
together. A deny fails the step for good and names the URL and the rule; an unreachable
policy service fails it retryably; a host that is busy or over its rate is waited for, as
long as the step's own timeout allows. Permits are released in the background: the slot
comes back at once, and at the permit's lease end if the release is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from google.protobuf import duration_pb2

from accord.common.v1 import decision_pb2, job_result_pb2, job_spec_pb2
from accord.policy.v1 import policy_service_pb2 as pb
from accord_executor.domain import results as r
from accord_kit.errors import AccordError, Unavailable
from accord_kit.policy import PolicyClient

# Reasons that say nothing about the target, only that it could not be looked up now.
TRANSIENT_REASONS = frozenset({"HOST_NOT_RESOLVED"})
MAX_LEASE_SECONDS = 600.0


@dataclass(frozen=True)
class Caller:
    """On whose behalf an attempt's requests are sent."""

    tenant: str
    job_id: str
    engine: job_spec_pb2.Engine.ValueType
    mode: job_spec_pb2.AuthorizationMode.ValueType


@dataclass(frozen=True)
class Admitted:
    """A request the policy allowed: where to send it, and the permit to give back."""

    address: str
    permit_id: str
    decision: decision_pb2.PolicyDecision


class Guard:
    def __init__(self, policy: PolicyClient) -> None:
        self._policy = policy
        self._releases: set[asyncio.Task[None]] = set()

    async def admit(
        self, caller: Caller, url: str, deadline: float, record: job_result_pb2.RequestRecord
    ) -> Admitted:
        """Wait for the policy's yes for one request, or raise StepFailed with its no."""
        while True:
            left = deadline - time.monotonic()
            request = pb.AcquirePermitRequest(
                url=url,
                engine=caller.engine,
                job_id=caller.job_id,
                authorization_mode=caller.mode,
                lease=_duration(min(max(left, 1.0), MAX_LEASE_SECONDS)),
            )
            try:
                answer = await self._policy.acquire(caller.tenant, request)
            except Unavailable as exc:
                raise r.StepFailed(
                    r.POLICY_UNAVAILABLE, f"{url} was not requested: {exc.message}"
                ) from None
            except AccordError as exc:
                raise r.StepFailed(
                    r.EXECUTOR_ERROR, f"{url} was not requested: {exc.message}"
                ) from None
            d = answer.decision
            record.decision_id, record.policy_revision = d.decision_id, d.policy_revision
            if d.outcome != decision_pb2.DECISION_OUTCOME_ALLOW:
                record.reasons.extend(d.reasons)
                raise r.StepFailed(_denied_code(d), _denied_message(url, d))
            if answer.granted:
                return Admitted(answer.address, answer.permit_id, d)
            wait = answer.retry_after.ToTimedelta().total_seconds()
            # Over the host's rate or at its cap: wait for the slot, within the step's time.
            await asyncio.sleep(min(max(wait, 0.01), max(deadline - time.monotonic(), 0.01)))

    async def check(self, caller: Caller, url: str, record: job_result_pb2.RequestRecord) -> None:
        """The policy's decision on a URL without taking a permit (the connection that
        carries it takes one); raises StepFailed with its no, as `admit` does."""
        request = pb.CheckUrlRequest(
            url=url, engine=caller.engine, job_id=caller.job_id, authorization_mode=caller.mode
        )
        try:
            d = (await self._policy.check_url(caller.tenant, request)).decision
        except Unavailable as exc:
            raise r.StepFailed(
                r.POLICY_UNAVAILABLE, f"{url} was not requested: {exc.message}"
            ) from None
        except AccordError as exc:
            raise r.StepFailed(
                r.EXECUTOR_ERROR, f"{url} was not requested: {exc.message}"
            ) from None
        record.decision_id, record.policy_revision = d.decision_id, d.policy_revision
        if d.outcome != decision_pb2.DECISION_OUTCOME_ALLOW:
            record.reasons.extend(d.reasons)
            raise r.StepFailed(_denied_code(d), _denied_message(url, d))

    def release(self, caller: Caller, permit_id: str) -> None:
        if not permit_id:
            return
        task = asyncio.create_task(self._release(caller.tenant, permit_id))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, tenant: str, permit_id: str) -> None:
        # A lost release is not an error: the permit's lease gives the slot back instead.
        with contextlib.suppress(AccordError):
            await self._policy.release(tenant, permit_id)

    async def close(self) -> None:
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=2.0)


def _not_sent(url: str, exc: AccordError) -> str:
    return f"{url} was not requested: {exc.message}"


def _denied_code(d: decision_pb2.PolicyDecision) -> str:
    if d.reasons and all(x.code in TRANSIENT_REASONS for x in d.reasons):
        return r.HTTP_ERROR
    return r.POLICY_DENIED


def _denied_message(url: str, d: decision_pb2.PolicyDecision) -> str:
    why = "; ".join(f"{x.code}: {x.message}" for x in d.reasons) or "no reason given"
    return f"policy refused {url} (decision {d.decision_id}, revision {d.policy_revision}): {why}"


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(seconds * 1000))
    return d
