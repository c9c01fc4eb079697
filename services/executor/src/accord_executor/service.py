"""Executor use cases: run a spec now, streaming its steps, and report pool status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from accord.common.v1 import decision_pb2, job_result_pb2, job_spec_pb2
from accord.executor.v1 import executor_service_pb2 as pb
from accord_executor.artifacts import ArtifactStore
from accord_executor.domain.results import TEMPLATE_ERROR
from accord_executor.engines.http import Outcome, Runner
from accord_executor.pools import Engine, Pools
from accord_kit import jobspec
from accord_kit.errors import FailedPrecondition, PermissionDenied
from accord_kit.policy import PolicyClient

Progress = job_result_pb2.StepResult | job_result_pb2.JobResult


class ExecutorUseCases:
    def __init__(
        self,
        pools: Pools,
        engines: Mapping[Engine, Runner],
        policy: PolicyClient,
        artifacts: ArtifactStore,
    ) -> None:
        self._pools = pools
        self._engines = engines
        self._policy = policy
        self._artifacts = artifacts

    async def artifact(
        self, tenant: str, artifact_id: str
    ) -> tuple[job_result_pb2.ArtifactRef, AsyncIterator[bytes]]:
        """The tenant's artifact and its content; another tenant's is NOT_FOUND."""
        ref = await self._artifacts.get(tenant, artifact_id)
        return ref, self._artifacts.read(tenant, artifact_id)

    def status(self) -> pb.GetExecutorStatusResponse:
        return self._pools.status()

    async def run_now(self, tenant: str, spec: job_spec_pb2.JobSpec) -> AsyncIterator[Progress]:
        """Each step's result as it is decided, then the job's result.

        The tenant's policy decides first, as for a queued job; a deny runs nothing. Then
        every request the run makes is decided again, on the tenant's behalf, as it is made.
        """
        jobspec.check([("spec.", spec)])  # as the orchestrator checks a job's at submission
        engine = self._engine(spec.engine)
        decision = await self._policy.evaluate(tenant, spec, job_id="")
        if decision.outcome != decision_pb2.DECISION_OUTCOME_ALLOW:
            reasons = "; ".join(f"{r.code}: {r.message}" for r in decision.reasons)
            raise PermissionDenied(
                f"policy denies this job ({reasons})",
                metadata={
                    "decision_id": decision.decision_id,
                    "policy_revision": str(decision.policy_revision),
                    "reasons": ",".join(r.code for r in decision.reasons),
                },
            )
        steps: asyncio.Queue[job_result_pb2.StepResult | None] = asyncio.Queue()
        with self._pools.slot(spec.engine):
            run = asyncio.create_task(engine.run(spec, steps.put_nowait, tenant=tenant))
            run.add_done_callback(lambda _: steps.put_nowait(None))
            try:
                while (step := await steps.get()) is not None:
                    yield step
                outcome = await run
            finally:
                # The caller went away mid-run: stop the work it no longer waits for.
                run.cancel()
        yield _final(outcome)

    def _engine(self, engine: Engine) -> Runner:
        pool = self._pools.get(engine)
        runner = self._engines.get(engine)
        if pool is None or runner is None or not pool.available:
            name = job_spec_pb2.Engine.Name(engine)
            reason = pool.unavailable_reason if pool is not None else "no such engine here"
            raise FailedPrecondition(f"{name} is not available on this executor: {reason}")
        return runner


def _final(outcome: Outcome) -> job_result_pb2.JobResult:
    # A failed step is reported in its StepResult; only a result template that cannot be
    # rendered fails with no failed step to carry the reason.
    failed = any(s.status == job_result_pb2.STEP_STATUS_FAILED for s in outcome.result.steps)
    if outcome.failure is not None and not failed:
        code = outcome.failure.code
        message = outcome.failure.message
        if code == TEMPLATE_ERROR:
            raise FailedPrecondition(f"the result could not be built: {message}")
        raise FailedPrecondition(f"{code}: {message}")
    return outcome.result
