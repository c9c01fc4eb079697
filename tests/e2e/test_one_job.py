"""One job through all four services as real processes: policy, queue, executor, audit."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid

import grpc
import pytest
from aiohttp import web

from accord.audit.v1 import audit_service_pb2, audit_service_pb2_grpc, record_pb2
from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit.net import free_port
from accord_kit.testing import REPO_ROOT, as_tenant, token
from tests.e2e.suite import Suite

pytestmark = pytest.mark.e2e
TENANT = "e2e"
MD = as_tenant(TENANT)
GET_JOB = "accord.orchestrator.v1.JobService/GetJob"


async def allow_local_site(
    policy: str, tenant: str = TENANT, metadata: tuple[tuple[str, str], ...] | None = None
) -> None:
    """Let `tenant` fetch from 127.0.0.1, through the policy service at `policy`."""
    async with grpc.aio.insecure_channel(policy) as ch:
        await policy_service_pb2_grpc.PolicyServiceStub(ch).CreatePolicy(
            policy_service_pb2.CreatePolicyRequest(
                request_id="local",
                policy=policy_pb2.Policy(
                    display_name="local site",
                    rules=policy_pb2.PolicyRules(
                        allowed_domains=["127.0.0.1"], allow_private_networks=True
                    ),
                ),
            ),
            metadata=metadata or as_tenant(tenant),
        )


def scrape(url: str) -> job_spec_pb2.JobSpec:
    step = job_spec_pb2.Step
    return job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[
            step(request=job_spec_pb2.RequestStep(url=url)),
            step(assertion=job_spec_pb2.AssertStep(status=200)),
            step(assertion=job_spec_pb2.AssertStep(text_contains="Openings")),
            step(name="title", extract=job_spec_pb2.ExtractStep(selector="title")),
            step(
                name="links",
                extract=job_spec_pb2.ExtractStep(selector="a", attribute="href", all=True),
            ),
        ],
    )


async def test_job_runs_to_success_and_is_audited(suite: Suite, site: str) -> None:
    await allow_local_site(suite.target("policy"))
    async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
        jobs = job_service_pb2_grpc.JobServiceStub(ch)
        created = await jobs.CreateJob(
            job_service_pb2.CreateJobRequest(request_id="e2e-1", spec=scrape(site)), metadata=MD
        )
        job_id = created.job.job_id
        assert created.job.state == job_pb2.JOB_STATE_QUEUED
        states = [
            r.change.state
            async for r in jobs.WatchJob(
                job_service_pb2.WatchJobRequest(job_id=job_id), metadata=MD, timeout=60
            )
        ]
        assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED, states
        job = (await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), metadata=MD)).job
    assert job.decision.outcome == decision_pb2.DECISION_OUTCOME_ALLOW
    assert job.result.outputs["title"] == "Accord test site"
    assert list(job.result.outputs["links"]) == ["/a", "/b"]
    assert [a.outcome for a in job.attempts] == [job_pb2.ATTEMPT_OUTCOME_SUCCEEDED]
    wanted = {f"accord.orchestrator.v1.job.{e}" for e in ("queued", "started", "succeeded")}
    async with grpc.aio.insecure_channel(suite.target("audit")) as ch:
        audit = audit_service_pb2_grpc.AuditServiceStub(ch)
        changes = await audited(audit, job_id, wanted)
        # The decision is the policy service's event, relayed and consumed on its own stream.
        decision = {"accord.policy.v1.decision.recorded"}
        decided = await audited(audit, job.decision.decision_id, decision)
    # The user who created the job caused the decision, though the orchestrator asked for it.
    assert {r.actor for r in decided if r.event_type in decision} == {f"test:{TENANT}"}
    assert {r.actor for r in changes if r.event_type.endswith(".queued")} == {f"test:{TENANT}"}


async def audited(
    audit: audit_service_pb2_grpc.AuditServiceStub, aggregate_id: str, wanted: set[str]
) -> list[record_pb2.AuditRecord]:
    """Wait until the audit log holds every wanted event type about `aggregate_id`."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        request = audit_service_pb2.ListRecordsRequest(aggregate_id=aggregate_id)
        records = (await audit.ListRecords(request, metadata=MD)).records
        if wanted <= {r.event_type for r in records}:
            return list(records)
        assert asyncio.get_running_loop().time() < deadline, [r.event_type for r in records]
        await asyncio.sleep(0.2)


async def test_grpcurl_lists_services_and_runs_a_job(suite: Suite, site: str) -> None:
    grpcurl = shutil.which("grpcurl")
    assert grpcurl, "grpcurl is installed by the dev dependencies"
    expected = {
        "orchestrator": {
            "accord.orchestrator.v1.JobService",
            "accord.orchestrator.v1.WorkerService",
        },
        "policy": {"accord.policy.v1.PolicyService"},
        "executor": {"accord.executor.v1.ExecutorService"},
        "audit": {"accord.audit.v1.AuditService"},
    }
    for name, services in expected.items():
        out = await _run(grpcurl, "-plaintext", suite.target(name), "list")
        assert services | {"grpc.health.v1.Health"} <= set(out.split()), out
    await allow_local_site(suite.target("policy"), "grpcurl")
    auth = f"authorization: Bearer {token('grpcurl', ['jobs:read', 'jobs:write'])}"
    body = json.dumps(
        {
            "request_id": "from-grpcurl",
            "spec": {
                "engine": "ENGINE_HTTP",
                "steps": [{"name": "page", "request": {"url": site}}],
            },
        }
    )
    created = json.loads(
        await _run(
            grpcurl,
            "-plaintext",
            "-H",
            auth,
            "-d",
            body,
            suite.target("orchestrator"),
            "accord.orchestrator.v1.JobService/CreateJob",
        )
    )
    assert created["job"]["state"] == "JOB_STATE_QUEUED"
    got = json.loads(
        await _run(
            grpcurl,
            "-plaintext",
            "-H",
            auth,
            "-d",
            json.dumps({"job_id": created["job"]["job_id"]}),
            suite.target("orchestrator"),
            GET_JOB,
        )
    )
    assert got["job"]["job_id"] == created["job"]["job_id"]
    assert got["job"]["request_id"] == "from-grpcurl"
    anonymous = await asyncio.to_thread(
        subprocess.run,
        [grpcurl, "-plaintext", "-d", "{}", suite.target("orchestrator"), GET_JOB],
        capture_output=True,
        text=True,
        check=False,
    )
    assert anonymous.returncode != 0
    assert "Unauthenticated" in anonymous.stderr, anonymous.stderr
    invalid = await asyncio.to_thread(
        subprocess.run,
        [
            grpcurl,
            "-plaintext",
            "-H",
            auth,
            "-d",
            json.dumps({"request_id": "x", "spec": {}}),
            suite.target("orchestrator"),
            "accord.orchestrator.v1.JobService/CreateJob",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert invalid.returncode != 0
    assert "InvalidArgument" in invalid.stderr, invalid.stderr
    assert "spec.engine" in invalid.stderr, invalid.stderr


@pytest.mark.parametrize(
    "client",
    [
        # @grpc/grpc-js with the .proto files loaded at run time by @grpc/proto-loader.
        pytest.param("client.js", id="proto-loader"),
        # Code generated from protos/ at `npm ci`, over @connectrpc/connect-node's gRPC.
        pytest.param("static_client.js", id="generated"),
    ],
)
async def test_node_client_creates_and_gets_a_job(suite: Suite, site: str, client: str) -> None:
    await allow_local_site(suite.target("policy"), "node")
    request_id = f"node-{uuid.uuid4().hex[:8]}"
    out = await _run(
        "node",
        str(REPO_ROOT / "tests/e2e/node" / client),
        suite.target("orchestrator"),
        site,
        request_id,
        env={"ACCORD_TOKEN": token("node", ["jobs:read", "jobs:write"])},
    )
    reply = json.loads(out)
    assert reply["created"]["state"] == "JOB_STATE_QUEUED"
    assert reply["got"]["job_id"] == reply["created"]["job_id"]
    assert reply["got"]["request_id"] == request_id
    assert reply["got"]["tenant_id"] == "node"


async def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=dict(os.environ, **(env or {})),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_page_with_text_the_database_cannot_store_still_completes(suite: Suite) -> None:
    """A NUL in what a page returns (PostgreSQL stores none) is replaced, not the job lost."""

    async def raw(_: web.Request) -> web.Response:
        return web.Response(text="before\x00after", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", raw)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await allow_local_site(suite.target("policy"))
        spec = job_spec_pb2.JobSpec(
            engine=job_spec_pb2.ENGINE_HTTP,
            steps=[
                job_spec_pb2.Step(
                    name="page",
                    request=job_spec_pb2.RequestStep(url=f"http://127.0.0.1:{port}/"),
                )
            ],
        )
        async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            created = await jobs.CreateJob(
                job_service_pb2.CreateJobRequest(request_id=str(uuid.uuid4()), spec=spec),
                metadata=MD,
            )
            watch = job_service_pb2.WatchJobRequest(job_id=created.job.job_id)
            states = [r.change.state async for r in jobs.WatchJob(watch, metadata=MD, timeout=60)]
            assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED, states
            get = job_service_pb2.GetJobRequest(job_id=created.job.job_id)
            job = (await jobs.GetJob(get, metadata=MD)).job
        assert job.result.outputs["page"]["body"] == "before\ufffdafter"
    finally:
        await runner.cleanup()
