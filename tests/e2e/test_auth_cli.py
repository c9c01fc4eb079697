"""`accord auth` against the four services as processes, and no token in logs or events."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import nats
import pytest

from accord.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord_kit import tokens
from accord_kit.testing import bearer, token
from tests.e2e.suite import Suite
from tests.e2e.test_one_job import TENANT, allow_local_site, audited, scrape

pytestmark = pytest.mark.e2e
STREAMS = ("ACCORD_ORCHESTRATOR", "ACCORD_POLICY")


async def accord(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "accord_cli", *argv],
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def last_sequences(nats_url: str) -> dict[str, int]:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        found = {}
        for stream in STREAMS:
            try:
                found[stream] = (await js.stream_info(stream)).state.last_seq
            except nats.js.errors.NotFoundError:
                found[stream] = 0
        return found
    finally:
        await nc.close()


async def events_since(nats_url: str, after: dict[str, int]) -> list[bytes]:
    """Every raw event the producers published after `after`, headers and body."""
    nc = await nats.connect(nats_url)
    raw: list[bytes] = []
    try:
        js = nc.jetstream()
        for stream, seq in after.items():
            last = (await js.stream_info(stream)).state.last_seq
            for n in range(seq + 1, last + 1):
                msg = await js.get_msg(stream, n)
                raw.append((msg.data or b"") + repr(msg.headers).encode())
    finally:
        await nc.close()
    return raw


async def test_issue_use_revoke_and_no_token_is_ever_written(
    suite: Suite, site: str, nats_url: str
) -> None:
    before = await last_sequences(nats_url)
    issued = await accord(
        "auth", "issue-token", "--tenant", TENANT, "--scope", "jobs:read,jobs:write", "--ttl", "10m"
    )
    assert issued.returncode == 0, issued.stderr
    user = issued.stdout.strip()
    claims = tokens.unverified_claims(user)
    assert (claims["tenant"], claims["scope"]) == (TENANT, "jobs:read jobs:write")
    assert claims["exp"] - claims["iat"] == 600

    await allow_local_site(suite.target("policy"))
    async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
        jobs = job_service_pb2_grpc.JobServiceStub(ch)
        created = await jobs.CreateJob(
            job_service_pb2.CreateJobRequest(request_id="cli-token", spec=scrape(site)),
            metadata=bearer(user),
        )
        watch = job_service_pb2.WatchJobRequest(job_id=created.job.job_id)
        states = [
            r.change.state async for r in jobs.WatchJob(watch, metadata=bearer(user), timeout=60)
        ]
        assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED

        admin = token(TENANT, ["tokens:admin", "audit:read"], subject="test:operator")
        revoked = await accord(
            "auth",
            "revoke",
            user,
            "--reason",
            "e2e",
            "--policy",
            suite.target("policy"),
            env={"ACCORD_TOKEN": admin},
        )
        assert revoked.returncode == 0, revoked.stderr
        assert claims["jti"] in revoked.stdout
        refused = None
        for _ in range(50):
            try:
                await jobs.GetJob(
                    job_service_pb2.GetJobRequest(job_id=created.job.job_id), metadata=bearer(user)
                )
            except grpc.aio.AioRpcError as exc:
                refused = exc.code()
                break
            await asyncio.sleep(0.1)
        assert refused == grpc.StatusCode.UNAUTHENTICATED

    again = await accord(
        "auth",
        "revoke",
        "--id",
        claims["jti"],
        "--policy",
        suite.target("policy"),
        env={"ACCORD_TOKEN": "not-a-token"},
    )
    assert again.returncode == 2
    assert "UNAUTHENTICATED" in again.stderr

    async with grpc.aio.insecure_channel(suite.target("audit")) as ch:
        audit = audit_service_pb2_grpc.AuditServiceStub(ch)
        await audited(audit, claims["jti"], {"accord.policy.v1.token.revoked"})
        records = (
            await audit.ListRecords(
                audit_service_pb2.ListRecordsRequest(page_size=1000), metadata=bearer(admin)
            )
        ).records
    assert records, "the run left audit records to search"
    # Who did what: the token's subject, never the token.
    actors = {(r.event_type.rsplit(".", 1)[-1], r.aggregate_id): r.actor for r in records}
    job_id = created.job.job_id
    assert actors[("queued", job_id)] == f"user:{TENANT}"
    assert actors[("started", job_id)] == actors[("succeeded", job_id)] == "service:executor"
    assert actors[("revoked", claims["jti"])] == "test:operator"

    secrets = {user, admin, *(p.read_text().strip() for p in _service_token_files())}
    written = {name: path.read_bytes() for name, path in suite.logs.items()}
    written["audit records"] = b"".join(r.SerializeToString() for r in records)
    written["events"] = b"\n".join(await events_since(nats_url, before))
    assert written["events"], "the run published events to search"
    for where, content in written.items():
        for secret in secrets:
            assert secret.encode() not in content, f"a token is in the {where}"
        # Any JWT at all: its header is base64 JSON, which always starts `eyJ`.
        assert b"eyJ" not in content, f"something token-shaped is in the {where}"


def _service_token_files() -> list[Path]:
    return [Path(os.environ[f"ACCORD_{s.upper()}_TOKEN_FILE"]) for s in tokens.SERVICE_SCOPES]
