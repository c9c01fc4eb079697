"""The executor's HTTP engine alone, in its own process as in the executor: N one-request
jobs at a concurrency, with or without a policy check before every request.

Usage: `python bench/_engine.py URL N CONCURRENCY [TENANT]`; with a TENANT, every request is
checked with the policy service at $ACCORD_EXECUTOR_POLICY_TARGET, acting for that tenant
with the executor's service token (from the environment, as the executor reads it). Prints
one JSON object: requests, seconds, p50 and p99 per job (ms).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from accord.common.v1 import job_spec_pb2 as js
from accord_executor.config import Settings
from accord_executor.engines.guard import Guard
from accord_executor.engines.http import HttpEngine
from accord_kit.policy import PolicyClient

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"
WARMUP = 100


async def run(url: str, total: int, concurrency: int, tenant: str | None) -> dict[str, float]:
    settings = Settings()
    client = PolicyClient(settings.policy_target, 5.0, settings) if tenant else None
    engine = HttpEngine(
        concurrency=concurrency,
        user_agent=USER_AGENT,
        guard=Guard(client) if client is not None else None,
    )
    await engine.start()
    spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[js.Step(request=js.RequestStep(url=url))])
    latencies: list[float] = []

    async def worker(jobs: range) -> None:
        for _ in jobs:
            started = time.perf_counter()
            outcome = await engine.run(spec, tenant=tenant)
            if outcome.failure is not None:
                raise RuntimeError(outcome.failure.message)
            latencies.append(time.perf_counter() - started)

    try:
        async with asyncio.timeout(600):
            share = range(WARMUP // concurrency + 1)
            await asyncio.gather(*(worker(share) for _ in range(concurrency)))
            latencies.clear()
            started = time.perf_counter()
            share = range(total // concurrency)
            await asyncio.gather(*(worker(share) for _ in range(concurrency)))
            seconds = time.perf_counter() - started
    finally:
        await engine.close()
        if client is not None:
            await client.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": seconds,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def main() -> None:
    url, total, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    tenant = sys.argv[4] if len(sys.argv) > 4 else None
    print(json.dumps(asyncio.run(run(url, total, concurrency, tenant))))


if __name__ == "__main__":
    main()
