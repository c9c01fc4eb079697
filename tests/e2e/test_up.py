"""`accord up` as a user runs it: embedded PostgreSQL and NATS, four services, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord_kit.net import free_port, port_in_use
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


def up_command(data: Path, offset: int) -> tuple[list[str], dict[str, str]]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("ACCORD_DATABASE_URL", "ACCORD_NATS_URL")
    }
    argv = [
        sys.executable,
        "-m",
        "accord_cli",
        "up",
        "--data-dir",
        str(data),
        "--port-offset",
        str(offset),
        "--postgres-port",
        str(free_port()),
        "--nats-port",
        str(free_port()),
    ]
    return argv, env


async def read_until(proc: asyncio.subprocess.Process, marker: str, timeout: float = 120) -> str:
    seen: list[str] = []
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "accord up exited early:\n" + "".join(seen)
            seen.append(line)
            if marker in line:
                return "".join(seen)


async def test_up_runs_everything_and_stops_cleanly(tmp_path: Path, site: str) -> None:
    offset = free_offset()
    argv, env = up_command(tmp_path / "data", offset)
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        banner = await read_until(proc, "Ctrl-C stops everything")
        assert f"orchestrator  grpc 127.0.0.1:{50051 + offset}" in banner
        ports = {
            n: p + offset
            for n, p in (
                ("orchestrator", 50051),
                ("policy", 50052),
                ("executor", 50053),
                ("audit", 50054),
            )
        }
        suite = Suite(ports, {}, {})
        await allow_local_site(suite)
        async with grpc.aio.insecure_channel(suite.target("orchestrator")) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            created = await jobs.CreateJob(
                job_service_pb2.CreateJobRequest(request_id="up-1", spec=scrape(site)),
                metadata=(("accord-tenant", "e2e"),),
            )
            states = [
                r.change.state
                async for r in jobs.WatchJob(
                    job_service_pb2.WatchJobRequest(job_id=created.job.job_id),
                    metadata=(("accord-tenant", "e2e"),),
                    timeout=60,
                )
            ]
        assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert not any(port_in_use(p + offset) for p in BASE_PORTS), "a service outlived accord up"
    assert (tmp_path / "data" / "postgres").is_dir(), "data lives under --data-dir"


async def test_up_reports_a_port_clash_without_a_traceback(tmp_path: Path) -> None:
    offset = free_offset()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 50052 + offset))
        blocker.listen()
        argv, env = up_command(tmp_path / "data", offset)
        done = await asyncio.to_thread(
            subprocess.run, argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 1
    assert f"port {50052 + offset} already in use" in done.stderr
    assert "Traceback" not in done.stderr
