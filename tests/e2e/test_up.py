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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.audit.v2 import audit_service_pb2, audit_service_pb2_grpc
from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord_kit.net import free_port, port_in_use
from accord_kit.ports import DEFAULT_PORTS
from accord_kit.testing import bearer
from tests.e2e.test_one_job import allow_local_site, scrape

pytestmark = pytest.mark.e2e
BASE_PORTS = tuple(p for ports in DEFAULT_PORTS.values() for p in ports)


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


@dataclass
class Up:
    """A running `accord up`: its pid and everything it has printed so far."""

    pid: int
    output: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.output)


@contextlib.asynccontextmanager
async def accord_up(argv: list[str]) -> AsyncIterator[Up]:
    """Run `accord up` until its banner, drain its output, Ctrl-C it on exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    up = Up(proc.pid)
    ready = asyncio.Event()

    async def drain() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            up.output.append(raw.decode(errors="replace"))
            if "Ctrl-C stops everything" in up.output[-1]:
                ready.set()

    reader = asyncio.create_task(drain())
    try:
        async with asyncio.timeout(120):
            await asyncio.wait(
                {reader, asyncio.create_task(ready.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
        assert ready.is_set(), "accord up exited early:\n" + up.text
        yield up
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 60)
        await reader
    assert code == 0, "".join(up.output[-50:])


def target(service: str, offset: int) -> str:
    return f"127.0.0.1:{DEFAULT_PORTS[service].grpc + offset}"


def child_pid(parent: int, module: str) -> int:
    """The pid of `parent`'s child running `python -m <module>`, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == parent and module.encode() in argv:
            return int(entry.name)
    raise AssertionError(f"{parent} has no child running {module}")


async def wait_until(what: str, ready: Callable[[], Awaitable[bool]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await ready():
        assert asyncio.get_running_loop().time() < deadline, f"not {what} within {timeout:g}s"
        await asyncio.sleep(0.2)


async def test_up_runs_everything_stops_cleanly_and_keeps_data(tmp_path: Path, site: str) -> None:
    offset, pg_port, nats_port = free_offset(), free_port(), free_port()
    argv = up_command(tmp_path / "data", offset, pg_port, nats_port)
    admin_token = tmp_path / "data" / "auth" / "admin.token"
    async with accord_up(argv) as up:
        banner = up.text
        assert f"orchestrator  grpc 127.0.0.1:{50051 + offset}" in banner
        assert "engine http    ready" in banner
        assert str(admin_token) in banner
        assert admin_token.stat().st_mode & 0o077 == 0, "the admin token is readable by others"
        token = admin_token.read_text().strip()
        assert token not in banner, "accord up printed a token"
        md = bearer(token)
        await allow_local_site(target("policy", offset), metadata=md)
        async with grpc.aio.insecure_channel(target("orchestrator", offset)) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            created = await jobs.CreateJob(
                job_service_pb2.CreateJobRequest(request_id="up-1", spec=scrape(site)), metadata=md
            )
            watch = job_service_pb2.WatchJobRequest(job_id=created.job.job_id)
            states = [r.change.state async for r in jobs.WatchJob(watch, metadata=md, timeout=60)]
        assert states[-1] == job_pb2.JOB_STATE_SUCCEEDED
        async with grpc.aio.insecure_channel(target("audit", offset)) as ch:
            signed = await audit_service_pb2_grpc.AuditServiceStub(ch).GetCheckpoint(
                audit_service_pb2.GetCheckpointRequest(), metadata=md
            )
    assert not any(port_in_use(p + offset) for p in BASE_PORTS), "a service outlived accord up"

    # The same data directory: the job is still there, the first token still works, and the
    # audit log signs with the key that signed before (a verifier pins one key, not one a run).
    async with accord_up(argv):
        async with grpc.aio.insecure_channel(target("orchestrator", offset)) as ch:
            job = (
                await job_service_pb2_grpc.JobServiceStub(ch).GetJob(
                    job_service_pb2.GetJobRequest(job_id=created.job.job_id), metadata=md
                )
            ).job
        async with grpc.aio.insecure_channel(target("audit", offset)) as ch:
            keys = await audit_service_pb2_grpc.AuditServiceStub(ch).GetCheckpointKeys(
                audit_service_pb2.GetCheckpointKeysRequest(), metadata=md
            )
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED
    assert signed.checkpoint.tree_size > 0
    assert [k.key_id for k in keys.keys] == [signed.checkpoint.key_id]
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


async def test_up_restarts_a_service_that_dies(tmp_path: Path) -> None:
    offset = free_offset()
    async with (
        accord_up(up_command(tmp_path / "data", offset)) as up,
        grpc.aio.insecure_channel(target("executor", offset)) as ch,
    ):
        killed = child_pid(up.pid, "accord_executor")
        os.kill(killed, signal.SIGKILL)
        said = "accord up: executor exited with code -9 (SIGKILL); restarting in "
        await wait_until("restarted", printed(up, said, "accord up: executor restarted"), 30)
        health = health_pb2_grpc.HealthStub(ch)

        async def serving() -> bool:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return reply.status == health_pb2.HealthCheckResponse.SERVING
            return False

        await wait_until("SERVING again", serving, 60)
        assert child_pid(up.pid, "accord_executor") != killed


def printed(up: Up, *lines: str) -> Callable[[], Awaitable[bool]]:
    async def found() -> bool:
        return all(line in up.text for line in lines)

    return found
