"""No input reaches INTERNAL: every RPC of every service, fed hostile requests, over the stack.

Driven by the descriptor set, so an RPC added to any contract is fuzzed too: for each one,
requests built at random from its descriptor and mutations of a valid request (NUL and
control characters, huge and empty strings, undefined enums, extreme numbers, out-of-range
times, malformed URLs, forged page tokens) are sent through the generated stubs to the real
processes. None may answer INTERNAL or UNKNOWN, no process may die, and nothing may be
stored for a refused request: every job, policy and schedule the RPC's own tenant holds
afterwards was named in an OK response (or fired by a schedule that was).
"""

from __future__ import annotations

import asyncio
import importlib
import random
from collections.abc import Iterator
from datetime import timedelta
from importlib import resources
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from accord.common.v1 import job_spec_pb2 as spec_pb
from accord.orchestrator.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    schedule_pb2,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit import tokens
from accord_kit.auth import TENANT_METADATA, bearer
from accord_kit.testing import token
from accord_kit.transport import MESSAGE_LIMITS
from tests.e2e import fuzz
from tests.e2e.suite import Suite

pytestmark = pytest.mark.e2e

RANDOM_CASES = 8
MUTATED_CASES = 8
CALL_TIMEOUT = 2.0
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVICE = bearer(token(tokens.SERVICE_TENANT, subject="test:fuzz", ttl=timedelta(hours=2)))


def services() -> list[ServiceDescriptor]:
    data = resources.files("accord").joinpath("descriptor_set.binpb").read_bytes()
    pool = descriptor_pool.Default()
    found = []
    for f in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        if f.package.startswith("accord."):
            importlib.import_module(f.name.removesuffix(".proto").replace("/", ".") + "_pb2")
            found.extend(pool.FindFileByName(f.name).services_by_name.values())
    return found


def _step(**action: Any) -> spec_pb.Step:
    return spec_pb.Step(**action)


LOCAL = "http://127.0.0.1:1/"
SPEC = spec_pb.JobSpec(
    engine=spec_pb.ENGINE_HTTP,
    steps=[
        _step(name="page", request=spec_pb.RequestStep(url=LOCAL, headers={"X-A": "b"})),
        _step(assertion=spec_pb.AssertStep(status=200)),
        _step(name="title", extract=spec_pb.ExtractStep(selector="title")),
    ],
    retry_policy=spec_pb.RetryPolicy(max_attempts=1),
    labels={"team": "fuzz"},
    result_template={"title": "{{ steps.title }}"},
)
POLICY = policy_pb2.Policy(
    display_name="local",
    rules=policy_pb2.PolicyRules(
        allowed_domains=["127.0.0.1"],
        domain_rules=[policy_pb2.DomainRule(domain="127.0.0.1", allowed_engines=[1])],
    ),
)
SCHEDULE = schedule_pb2.Schedule(
    display_name="nightly",
    spec=schedule_pb2.ScheduleSpec(cron="0 3 * * *", time_zone="UTC"),
    job_template=SPEC,
)
# Valid requests to mutate, where a random one would rarely pass validation; an RPC
# without a seed is fuzzed with random requests only.
SEEDS: dict[str, Message] = {
    "CreateJob": job_service_pb2.CreateJobRequest(request_id="r", spec=SPEC),
    "BatchCreateJobs": job_service_pb2.BatchCreateJobsRequest(request_id="b", specs=[SPEC, SPEC]),
    "ListJobs": job_service_pb2.ListJobsRequest(page_size=10, states=[2]),
    "CreatePolicy": policy_service_pb2.CreatePolicyRequest(request_id="p", policy=POLICY),
    "EvaluateJob": policy_service_pb2.EvaluateJobRequest(spec=SPEC, dry_run=True),
    "CheckUrl": policy_service_pb2.CheckUrlRequest(url=LOCAL, engine=1),
    "CreateSchedule": schedule_service_pb2.CreateScheduleRequest(request_id="s", schedule=SCHEDULE),
}


def cases(method: MethodDescriptor) -> Iterator[Message]:
    rng = random.Random(method.full_name)  # noqa: S311 - reproducible test data
    cls = message_factory.GetMessageClass(method.input_type)
    for _ in range(RANDOM_CASES):
        message = cls()
        fuzz.fill(message, rng)
        yield message
    seed = SEEDS.get(method.name)
    if seed is not None:
        yield seed
        for _ in range(MUTATED_CASES):
            yield fuzz.mutate(seed, rng)


def created_ids(response: Message) -> set[str]:
    """Ids of jobs, policies and schedules an OK response names."""
    found: set[str] = set()
    for field, value in response.ListFields():
        if field.name in ("job_id", "policy_id", "schedule_id"):
            found.add(value)
        elif field.name == "job_ids":
            found.update(value)
        elif field.message_type is not None and field.is_repeated:
            for item in value:
                if isinstance(item, Message):
                    found |= created_ids(item)
        elif field.message_type is not None:
            found |= created_ids(value)
    return found


def _target(suite: Suite, service: ServiceDescriptor) -> str:
    return suite.target(service.full_name.split(".")[1])


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, request: Message, md: Any):  # type: ignore[no-untyped-def]
    module = importlib.import_module(
        method.containing_service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
    )
    stub = getattr(module, method.containing_service.name + "Stub")(channel)
    call = getattr(stub, method.name)
    if method.server_streaming:
        stream = call(request, metadata=md, timeout=CALL_TIMEOUT)
        return [item async for item in stream]
    return [await call(request, metadata=md, timeout=CALL_TIMEOUT)]


async def _stored(suite: Suite, md: Any) -> tuple[set[str], dict[str, str]]:
    """The tenant's policies and schedules, and its jobs with the schedule of each."""
    async with (
        grpc.aio.insecure_channel(suite.target("orchestrator")) as orchestrator,
        grpc.aio.insecure_channel(suite.target("policy")) as policy,
    ):
        jobs = job_service_pb2_grpc.JobServiceStub(orchestrator)
        fired: dict[str, str] = {}
        page_token = ""
        while True:
            page = await jobs.ListJobs(
                job_service_pb2.ListJobsRequest(page_size=1000, page_token=page_token),
                metadata=md,
            )
            fired.update({j.job_id: j.schedule_id for j in page.jobs})
            if not (page_token := page.next_page_token):
                break
        policies = await policy_service_pb2_grpc.PolicyServiceStub(policy).ListPolicies(
            policy_service_pb2.ListPoliciesRequest(page_size=1000), metadata=md
        )
        schedules = await schedule_service_pb2_grpc.ScheduleServiceStub(orchestrator).ListSchedules(
            schedule_service_pb2.ListSchedulesRequest(page_size=1000), metadata=md
        )
    stored = {p.policy_id for p in policies.policies} | {s.schedule_id for s in schedules.schedules}
    return stored, fired


async def _fuzz_method(suite: Suite, method: MethodDescriptor) -> list[str]:
    tenant = "fuzz-" + method.name.lower()
    md = (*SERVICE, (TENANT_METADATA, tenant))
    problems: list[str] = []
    created: set[str] = set()
    service = method.containing_service
    async with grpc.aio.insecure_channel(_target(suite, service), options=MESSAGE_LIMITS) as ch:
        for index, request in enumerate(cases(method)):
            try:
                for response in await _call(ch, method, request, md):
                    created |= created_ids(response)
            except grpc.aio.AioRpcError as err:
                if index == RANDOM_CASES:  # the valid seed must pass, or mutations prove little
                    problems.append(f"{method.full_name}: the valid seed failed: {err.code()}")
                if err.code() in FORBIDDEN:
                    shown = str(request)[:300].replace("\n", " ")
                    what = f"{err.code().name} {err.details()!r}"
                    problems.append(f"{method.full_name} case {index}: {what} for {shown}")
    stored, fired = await _stored(suite, md)
    strays = {i for i in stored if i not in created}
    strays |= {j for j, s in fired.items() if j not in created and s not in created}
    if strays:
        problems.append(f"{method.full_name}: stored for refused requests: {sorted(strays)}")
    return problems


async def test_no_request_to_any_rpc_gets_internal_or_stores_anything_when_refused(
    suite: Suite,
) -> None:
    methods = [m for s in services() for m in s.methods]
    assert len(methods) >= 40, "the descriptor walk finds every RPC"
    gate = asyncio.Semaphore(6)

    async def one(method: MethodDescriptor) -> list[str]:
        async with gate:
            return await _fuzz_method(suite, method)

    problems = [p for found in await asyncio.gather(*map(one, methods)) for p in found]
    suite.check_alive()
    assert not problems, "\n".join(problems)
