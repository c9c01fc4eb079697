"""Anything may die: with a few hundred jobs in flight, kill or stall one process at a time.

After recovery every accepted job has SUCCEEDED, none completed twice, and each of its
changes is in the audit log exactly once (see workload.assert_exactly_once). Clients retry
UNAVAILABLE with the same request_id, as the contract says they may.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest

from accord.orchestrator.v1 import job_pb2
from accord_kit.stack import Stack
from tests.e2e.audit_log import assert_log_in_order_and_verified
from tests.e2e.suite import Launch
from tests.e2e.workload import assert_exactly_once, connect, poll, settle, submit

pytestmark = pytest.mark.e2e

REPLICAS = {"orchestrator": 2, "executor": 2}
SETTINGS = {
    # A killed executor's leases expire in 3 s (heartbeats every second).
    "ACCORD_EXECUTOR_LEASE_SECONDS": "3",
    # Events a killed audit service took but did not acknowledge come again in 5 s.
    "ACCORD_AUDIT_ACK_WAIT": "5",
}
JOBS = 300
DELAY = 0.5  # seconds each job lasts, so that leases are held when something dies
RECOVERY = 120.0
RUNNING = job_pb2.JOB_STATE_RUNNING


async def stack_under_load(launch: Launch) -> Stack:
    return await launch(REPLICAS, **SETTINGS)


async def until_running(stack: Stack, at_least: int, worker: str = "", timeout: float = 60) -> None:
    """Wait until `at_least` jobs are RUNNING (leased by `worker`, if given)."""
    query = "SELECT count(*) FROM orchestrator.jobs WHERE state = $1 AND lease_worker LIKE $2"
    deadline = asyncio.get_running_loop().time() + timeout
    conn = await connect(stack)
    try:
        while (await poll(conn, query, RUNNING, worker or "%") or 0) < at_least:
            assert asyncio.get_running_loop().time() < deadline, f"{worker} never held leases"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


@dataclass
class Run:
    """What a chaos run produced: the accepted jobs and the codes clients retried."""

    jobs: list[str]
    retried: list[grpc.StatusCode] = field(default_factory=list)
    # Whether batches were still being admitted when the chaos was done.
    mid_admission: bool = False


async def survives(
    stack: Stack,
    chaos: Callable[[], Awaitable[object]],
    *,
    tag: str,
    batch: int = 100,
    admitted_first: bool = False,
    recovery: float = RECOVERY,
) -> Run:
    """Submit JOBS jobs, do `chaos` once some run, then check each ran and was audited once.

    With `admitted_first` every job is accepted before the chaos; otherwise it strikes
    while batches are still being admitted.
    """
    run = Run([])
    submitting = asyncio.create_task(
        submit(stack, JOBS, tag=tag, delay=DELAY, batch=batch, retried=run.retried)
    )
    try:
        if admitted_first:
            await submitting
        await until_running(stack, at_least=10)
        await chaos()
        run.mid_admission = not submitting.done()
        run.jobs = await submitting
    finally:
        submitting.cancel()
    assert len(run.jobs) == JOBS
    await settle(stack, run.jobs, timeout=recovery)
    await assert_exactly_once(stack, run.jobs, timeout=recovery)
    return run


async def killed(stack: Stack, service: str, replica: int = 0) -> None:
    pid = await asyncio.to_thread(stack.kill, service, replica)
    deadline = asyncio.get_running_loop().time() + 30
    while stack.deaths(service, replica) < 1:
        assert asyncio.get_running_loop().time() < deadline, f"{service} ({pid}) did not die"
        await asyncio.sleep(0.05)


async def test_sigkill_an_executor_holding_leases(launch: Launch) -> None:
    stack = await stack_under_load(launch)
    held: list[str] = []

    async def chaos() -> None:
        await until_running(stack, at_least=5, worker="executor-0")
        conn = await connect(stack)
        try:
            rows = await conn.fetch(
                "SELECT job_id FROM orchestrator.jobs WHERE state = $1 AND lease_worker = $2",
                RUNNING,
                "executor-0",
            )
        finally:
            await conn.close()
        held.extend(r["job_id"] for r in rows)
        await killed(stack, "executor", 0)

    await survives(stack, chaos, tag="executor")
    conn = await connect(stack)
    try:
        expired = await conn.fetchval(
            "SELECT count(DISTINCT job_id) FROM orchestrator.attempts "
            "WHERE job_id = ANY($1) AND worker_id = $2 AND outcome = $3",
            held,
            "executor-0",
            job_pb2.ATTEMPT_OUTCOME_LEASE_EXPIRED,
        )
    finally:
        await conn.close()
    print(f"executor-0 held {len(held)} leases when killed; {expired} of them expired")
    # Most leases it held when it died expired and their jobs ran again elsewhere; a few
    # may have been reported in the instant before SIGKILL.
    assert expired >= len(held) // 2, (expired, len(held))
    await asyncio.to_thread(stack.wait_serving, "executor", 0)


async def test_sigkill_an_orchestrator_mid_batch(launch: Launch) -> None:
    stack = await stack_under_load(launch)

    async def chaos() -> None:
        await killed(stack, "orchestrator", 0)

    # Small batches: both orchestrators are admitting one whenever the kill comes.
    run = await survives(stack, chaos, tag="orchestrator", batch=25)
    assert grpc.StatusCode.UNAVAILABLE in run.retried, "the kill missed every batch"
    await asyncio.to_thread(stack.wait_serving, "orchestrator", 0)


async def test_sigkill_the_policy_service(launch: Launch) -> None:
    stack = await stack_under_load(launch)

    async def chaos() -> None:
        await killed(stack, "policy")

    run = await survives(stack, chaos, tag="policy", batch=25)
    # Admission went on across the kill: calls in the gap either waited for the restarted
    # policy service or failed closed (UNAVAILABLE, nothing stored) and were asked again.
    assert run.mid_admission, "the kill missed every batch"
    await asyncio.to_thread(stack.wait_serving, "policy")


async def test_sigkill_the_audit_service(launch: Launch) -> None:
    stack = await stack_under_load(launch)

    async def chaos() -> None:
        await killed(stack, "audit")

    run = await survives(stack, chaos, tag="audit")
    await asyncio.to_thread(stack.wait_serving, "audit")
    await assert_log_in_order_and_verified(stack, run.jobs)


async def test_restart_nats(launch: Launch) -> None:
    stack = await stack_under_load(launch)
    restart = functools.partial(asyncio.to_thread, stack.restart_nats)
    await survives(stack, restart, tag="nats-restart")
    await asyncio.to_thread(stack.wait_serving)


async def test_pause_nats_for_15_seconds(launch: Launch) -> None:
    stack = await stack_under_load(launch)
    resumed = 0.0

    async def chaos() -> None:
        nonlocal resumed
        await asyncio.to_thread(stack.pause_nats)
        try:
            await asyncio.sleep(15)  # the outage itself, not a wait for something to happen
        finally:
            await asyncio.to_thread(stack.resume_nats)
        resumed = time.monotonic()

    # Publishing, the audit log and revocations resume within seconds of SIGCONT.
    await survives(stack, chaos, tag="nats-pause", recovery=60)
    print(f"recovered {time.monotonic() - resumed:.1f}s after NATS resumed")
    await asyncio.to_thread(stack.wait_serving, timeout=60)


async def test_restart_postgres_with_jobs_in_flight(launch: Launch) -> None:
    stack = await stack_under_load(launch)
    restart = functools.partial(asyncio.to_thread, stack.restart_postgres)
    await survives(stack, restart, tag="pg-restart", admitted_first=True)
    await asyncio.to_thread(stack.wait_serving)


async def test_restart_postgres_while_admitting(launch: Launch) -> None:
    stack = await stack_under_load(launch)
    restart = functools.partial(asyncio.to_thread, stack.restart_postgres)
    await survives(stack, restart, tag="pg-admitting", batch=25)
