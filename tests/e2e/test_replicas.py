"""Replicas share the work: two orchestrators, three executors, each job run exactly once."""

from __future__ import annotations

import pytest

from tests.e2e.suite import Launch
from tests.e2e.workload import assert_exactly_once, connect, settle, submit

pytestmark = pytest.mark.e2e


async def test_two_orchestrators_and_three_executors_run_each_job_once(launch: Launch) -> None:
    stack = await launch({"orchestrator": 2, "executor": 3})
    jobs = await submit(stack, 2000, tag="replicas", batch=500)
    assert len(jobs) == 2000
    await settle(stack, jobs, timeout=300)
    await assert_exactly_once(stack, jobs)
    conn = await connect(stack)
    try:
        workers = {
            r["worker_id"]
            for r in await conn.fetch("SELECT DISTINCT worker_id FROM orchestrator.attempts")
        }
    finally:
        await conn.close()
    assert workers == {"executor-0", "executor-1", "executor-2"}
