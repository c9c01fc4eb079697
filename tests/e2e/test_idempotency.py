"""30 concurrent creates with one request id, for every create RPC: one resource, no INTERNAL.

Every RPC named Create* or BatchCreate* in any contract must have a case here (the
descriptor set is the list), so a create RPC added later is raced too. Two changes that are
not creates are raced the same way: a backfill (its jobs, actions and answer made once) and
a cancel (one state change, every caller the first answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

from accord.common.v1 import job_spec_pb2 as spec_pb
from accord.orchestrator.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_pb2,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
    workflow_pb2,
    workflow_service_pb2,
    workflow_service_pb2_grpc,
)
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit.testing import as_tenant
from tests.e2e.suite import Suite
from tests.e2e.test_fuzz import services

pytestmark = pytest.mark.e2e
CALLERS = 30
SPEC = spec_pb.JobSpec(
    engine=spec_pb.ENGINE_HTTP,
    steps=[spec_pb.Step(request=spec_pb.RequestStep(url="http://127.0.0.1:1/"))],
)

Md = tuple[tuple[str, str], ...]
# One create call (returning the ids it names) and the tenant's listing of what it makes.
Create = Callable[[grpc.aio.Channel, Md], Awaitable[list[str]]]
Listed = Callable[[grpc.aio.Channel, Md], Awaitable[list[str]]]


async def create_job(ch: grpc.aio.Channel, md: Md) -> list[str]:
    request = job_service_pb2.CreateJobRequest(request_id="same", spec=SPEC)
    response = await job_service_pb2_grpc.JobServiceStub(ch).CreateJob(request, metadata=md)
    return [response.job.job_id]


async def batch_create_jobs(ch: grpc.aio.Channel, md: Md) -> list[str]:
    request = job_service_pb2.BatchCreateJobsRequest(request_id="same", specs=[SPEC, SPEC])
    stub = job_service_pb2_grpc.JobServiceStub(ch)
    return [j.job_id for j in (await stub.BatchCreateJobs(request, metadata=md)).jobs]


async def list_jobs(ch: grpc.aio.Channel, md: Md) -> list[str]:
    request = job_service_pb2.ListJobsRequest(page_size=1000)
    stub = job_service_pb2_grpc.JobServiceStub(ch)
    return [j.job_id for j in (await stub.ListJobs(request, metadata=md)).jobs]


async def create_schedule(ch: grpc.aio.Channel, md: Md) -> list[str]:
    schedule = schedule_pb2.Schedule(
        display_name="nightly",
        spec=schedule_pb2.ScheduleSpec(cron="0 3 * * *", time_zone="UTC"),
        job_template=SPEC,
    )
    request = schedule_service_pb2.CreateScheduleRequest(request_id="same", schedule=schedule)
    stub = schedule_service_pb2_grpc.ScheduleServiceStub(ch)
    return [(await stub.CreateSchedule(request, metadata=md)).schedule.schedule_id]


async def list_schedules(ch: grpc.aio.Channel, md: Md) -> list[str]:
    request = schedule_service_pb2.ListSchedulesRequest(page_size=1000)
    stub = schedule_service_pb2_grpc.ScheduleServiceStub(ch)
    return [s.schedule_id for s in (await stub.ListSchedules(request, metadata=md)).schedules]


async def create_workflow(ch: grpc.aio.Channel, md: Md) -> list[str]:
    workflow = workflow_pb2.Workflow(
        display_name="status",
        uptime=workflow_pb2.UptimeCheck(url="http://127.0.0.1:1/"),
    )
    workflow.calendar.interval.FromSeconds(3600)
    request = workflow_service_pb2.CreateWorkflowRequest(request_id="same", workflow=workflow)
    stub = workflow_service_pb2_grpc.WorkflowServiceStub(ch)
    return [(await stub.CreateWorkflow(request, metadata=md)).workflow.workflow_id]


async def list_workflows(ch: grpc.aio.Channel, md: Md) -> list[str]:
    request = workflow_service_pb2.ListWorkflowsRequest(page_size=1000)
    stub = workflow_service_pb2_grpc.WorkflowServiceStub(ch)
    return [w.workflow_id for w in (await stub.ListWorkflows(request, metadata=md)).workflows]


async def create_policy(ch: grpc.aio.Channel, md: Md) -> list[str]:
    policy = policy_pb2.Policy(
        display_name="local", rules=policy_pb2.PolicyRules(allowed_domains=["127.0.0.1"])
    )
    request = policy_service_pb2.CreatePolicyRequest(request_id="same", policy=policy)
    stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
    return [(await stub.CreatePolicy(request, metadata=md)).policy.policy_id]


async def list_policies(ch: grpc.aio.Channel, md: Md) -> list[str]:
    request = policy_service_pb2.ListPoliciesRequest(page_size=1000)
    stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
    return [p.policy_id for p in (await stub.ListPolicies(request, metadata=md)).policies]


CASES: dict[str, tuple[str, Create, Listed]] = {
    "accord.orchestrator.v1.JobService.CreateJob": ("orchestrator", create_job, list_jobs),
    "accord.orchestrator.v1.JobService.BatchCreateJobs": (
        "orchestrator",
        batch_create_jobs,
        list_jobs,
    ),
    "accord.orchestrator.v1.ScheduleService.CreateSchedule": (
        "orchestrator",
        create_schedule,
        list_schedules,
    ),
    "accord.orchestrator.v1.WorkflowService.CreateWorkflow": (
        "orchestrator",
        create_workflow,
        list_workflows,
    ),
    "accord.policy.v1.PolicyService.CreatePolicy": ("policy", create_policy, list_policies),
}


def test_every_create_rpc_is_raced() -> None:
    creates = {
        m.full_name
        for s in services()
        for m in s.methods
        if m.name.startswith(("Create", "BatchCreate"))
    }
    assert creates == set(CASES)


async def race(suite: Suite, rpc: str) -> list[str]:
    """What is wrong when CALLERS callers create at once with one request id."""
    service, create, listed = CASES[rpc]
    md = as_tenant("race-" + rpc.rsplit(".", 1)[1].lower())
    async with grpc.aio.insecure_channel(suite.target(service)) as ch:
        outcomes: list[Any] = await asyncio.gather(
            *(create(ch, md) for _ in range(CALLERS)), return_exceptions=True
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            return [f"{rpc}: {len(failures)} of {CALLERS} failed, e.g. {failures[0]}"]
        if len({tuple(o) for o in outcomes}) != 1:
            return [f"{rpc}: callers got different resources"]
        stored = sorted(await listed(ch, md))
        if stored != sorted(outcomes[0]):
            return [f"{rpc}: stored {stored}, answered {outcomes[0]}"]
    return []


async def race_backfill(suite: Suite) -> list[str]:
    md = as_tenant("race-backfill")
    async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
        [schedule_id] = await create_schedule(ch, md)
        stub = schedule_service_pb2_grpc.ScheduleServiceStub(ch)
        request = schedule_service_pb2.BackfillScheduleRequest(
            schedule_id=schedule_id,
            request_id="same",
            overlap_policy=schedule_pb2.OVERLAP_POLICY_ALLOW_ALL,
        )
        request.start_time.FromSeconds(1_767_225_600)  # 2026-01-01T00:00Z: three nightly fires
        request.end_time.FromSeconds(1_767_225_600 + 3 * 86_400)
        answers: list[Any] = await asyncio.gather(
            *(stub.BackfillSchedule(request, metadata=md) for _ in range(CALLERS)),
            return_exceptions=True,
        )
        failures = [a for a in answers if isinstance(a, BaseException)]
        if failures:
            return [f"BackfillSchedule: {len(failures)} failed, e.g. {failures[0]}"]
        if any(a != answers[0] for a in answers) or len(answers[0].job_ids) != 3:
            return ["BackfillSchedule: callers got different or wrong answers"]
        got = schedule_service_pb2.GetScheduleRequest(schedule_id=schedule_id)
        actions = (await stub.GetSchedule(got, metadata=md)).schedule.recent_actions
        stored = sorted(await list_jobs(ch, md))
        if stored != sorted(answers[0].job_ids) or len(actions) != 3:
            return [f"BackfillSchedule: {len(stored)} jobs and {len(actions)} actions, not 3"]
    return []


async def race_cancel(suite: Suite) -> list[str]:
    md = as_tenant("race-cancel")
    async with (
        grpc.aio.insecure_channel(suite.target("policy")) as pch,
        grpc.aio.insecure_channel(suite.target("orchestrator")) as ch,
    ):
        rules = policy_pb2.PolicyRules(
            allowed_domains=["127.0.0.1"], allowed_networks=["127.0.0.1/32"]
        )
        await policy_service_pb2_grpc.PolicyServiceStub(pch).CreatePolicy(
            policy_service_pb2.CreatePolicyRequest(
                request_id="loopback",
                policy=policy_pb2.Policy(display_name="loopback", rules=rules),
            ),
            metadata=md,
        )
        spec = spec_pb.JobSpec()
        spec.CopyFrom(SPEC)
        spec.not_before_time.FromSeconds(4_102_444_800)  # 2100: queued, never leased here
        stub = job_service_pb2_grpc.JobServiceStub(ch)
        made = await stub.CreateJob(
            job_service_pb2.CreateJobRequest(request_id="job", spec=spec), metadata=md
        )
        request = job_service_pb2.CancelJobRequest(job_id=made.job.job_id, request_id="same")
        answers: list[Any] = await asyncio.gather(
            *(stub.CancelJob(request, metadata=md) for _ in range(CALLERS)),
            return_exceptions=True,
        )
        failures = [a for a in answers if isinstance(a, BaseException)]
        if failures:
            return [f"CancelJob: {len(failures)} failed, e.g. {failures[0]}"]
        if any(a != answers[0] for a in answers):
            return ["CancelJob: callers got different answers"]
        job = answers[0].job
        if job.state != job_pb2.JOB_STATE_CANCELLED or job.version != made.job.version + 1:
            return [f"CancelJob: state {job.state}, version {job.version}: not cancelled once"]
    return []


async def test_concurrent_creates_with_one_request_id_make_one_resource(suite: Suite) -> None:
    found = await asyncio.gather(
        *(race(suite, rpc) for rpc in sorted(CASES)), race_backfill(suite), race_cancel(suite)
    )
    problems = [p for each in found for p in each]
    assert not problems, "\n".join(problems)
