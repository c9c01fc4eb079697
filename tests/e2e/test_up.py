"""`accord up` as a user runs it: embedded PostgreSQL and NATS, four services, Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord_kit.net import free_port, port_in_use
from accord_kit.testing import bearer
from tests.e2e.suite import Suite
from tests.e2e.test_one_job import allow_local_site, scrape

pytestmark = pytest.mark.e2e
BASE_PORTS = (50051, 50052, 50053, 50054, 9451, 9452, 9453, 9454)


def free_offset() -> int:
    for _ in range(100):
        offset = random.randrange(1000, 9000)  # noqa: S311 - picking ports, not secrets
        if not any(port_in_use(p + offset) for p in BASE_PORTS):
            return offset
    raise AssertionError("no free port range")


def up_command(data: Path, offset: int, pg_port: int = 0, nats_port: int = 0) -> list[str]:
    return [
        *(sys.executable, "-m", "accord_cli", "up", "--data-dir", str(data)),
        *("--port-offset", str(offset), "--postgres-port", str(pg_port or free_port())),
        *("--nats-port", str(nats_port or free_port())),
    ]


def clean_env() -> dict[str, str]:
    """`accord up` as on a fresh machine: no database, NATS, keys or tokens configured."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ACCORD_") or k.startswith("ACCORD_TEST_")
    }


@contextlib.asynccontextmanager
async def accord_up(argv: list[str]) -> AsyncIterator[str]:
    """Run `accord up` until its banner, drain its output, Ctrl-C it on exit; yields the banner."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output: list[str] = []
    ready = asyncio.Event()

    async def drain() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            output.append(raw.decode(errors="replace"))
            if "Ctrl-C stops everything" in output[-1]:
                ready.set()

    reader = asyncio.create_task(drain())
    try:
        async with asyncio.timeout(120):
            await asyncio.wait(
                {reader, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
        assert ready.is_set(), "accord up exited early:\n" + "".join(output)
        yield "".join(output)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 60)
        await reader
    assert code == 0, "".join(output[-50:])


def stack_at(offset: int) -> Suite:
    names = ("orchestrator", "policy", "executor", "audit")
    return Suite({n: 50051 + i + offset for i, n in enumerate(names)}, {}, {})


async def test_up_runs_everything_stops_cleanly_and_keeps_data(tmp_path: Path, site: str) -> None:
    offset, pg_port, nats_port = free_offset(), free_port(), free_port()
    argv = up_command(tmp_path / "data", offset, pg_port, nats_port)
    suite = stack_at(offset)
    admin_token = tmp_path / "data" / "auth" / "admin.token"
    async with accord_up(argv) as banner:
        assert f"orchestrator  grpc 127.0.0.1:{50051 + offset}" in banner
        assert "engine http    ready" in banner
        assert str(admin_token) in banner
        assert admin_token.stat().st_mode & 0o077 == 0, "the admin token is readable by others"
        token = admin_token.read_text().strip()
        assert token not in banner, "accord up printed a token"
        md = bearer(token)
        await allow_local_site(suite, metadata=md)
        async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            created = await jobs.CreateJob(
                job_service_pb2.CreateJobRequest(request_id="up-1", spec=scrape(site)), metadata=md
            )
            watch = job_service_pb2.WatchJobRequest(job_id=created.job.job_id)
            states = [r.change.state async for r in jobs.WatchJob(watch, metadata=md, timeout=60)]
        assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED
    assert not any(port_in_use(p + offset) for p in BASE_PORTS), "a service outlived accord up"

    # The same data directory: the job is still there, and the first token still works.
    async with accord_up(argv), grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
        job = (
            await job_service_pb2_grpc.JobServiceStub(ch).GetJob(
                job_service_pb2.GetJobRequest(job_id=created.job.job_id), metadata=md
            )
        ).job
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert job.result.outputs["title"] == "Accord test site"


async def test_up_reports_a_port_clash_without_a_traceback(tmp_path: Path) -> None:
    offset = free_offset()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 50052 + offset))
        blocker.listen()
        done = await asyncio.to_thread(
            subprocess.run,
            up_command(tmp_path / "data", offset),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"port {50052 + offset} already in use" in done.stderr
    assert "Traceback" not in done.stderr
