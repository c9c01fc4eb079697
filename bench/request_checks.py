"""Benchmark: what deciding every request costs.

1. Policy calls: AcquirePermit (the check and the permit in one call) from 64 concurrent
   clients, calls/s and latency percentiles, beside a raw grpc.aio echo server (its own
   process, as the policy service is) measured with the same client in the same run.
2. The HTTP engine: N one-request jobs at concurrency C, with and without a check on every
   request, beside a raw aiohttp loop (`_raw.py`, its own process).

Usage: uv run python bench/request_checks.py [--calls 5000] [--clients 64] [--jobs 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from _common import metadata, phase, workdir
from _stack import SERVICES, Stack, running_stack
from http_jobs import raw_baseline, serve_page

from accord.common.v1 import job_spec_pb2 as js
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit.net import free_port, wait_for_port

ECHO = Path(__file__).with_name("_echo.py")
ENGINE = Path(__file__).with_name("_engine.py")
HOST = "127.0.0.1"
pb = policy_service_pb2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000, help="policy calls per phase")
    parser.add_argument("--clients", type=int, default=64, help="concurrent policy callers")
    parser.add_argument("--jobs", type=int, default=2000, help="engine jobs per phase")
    parser.add_argument("--concurrency", type=int, default=16, help="engine concurrency")
    parser.add_argument("--workdir", type=Path, help="keep data and logs here")
    return parser.parse_args()


async def closed_loop(
    call: Callable[[], Awaitable[object]], total: int, clients: int
) -> dict[str, float]:
    """`total` calls from `clients` concurrent callers: calls/s and latency percentiles."""
    latencies: list[float] = []
    remaining = iter(range(total))

    async def caller() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.timeout(600):
        await asyncio.gather(*(caller() for _ in range(clients)))
    seconds = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {"per_s": total / seconds, "p50": pct(0.5), "p99": pct(0.99), "seconds": seconds}


async def echo_baseline(total: int, clients: int) -> dict[str, float]:
    port = free_port(HOST)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ECHO), str(port), stdout=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.to_thread(wait_for_port, HOST, port, 30)
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
            echo = channel.unary_unary("/bench.Echo/Echo")
            payload = b"x" * 64
            await closed_loop(lambda: echo(payload), 200, clients)  # warm
            return await closed_loop(lambda: echo(payload), total, clients)
    finally:
        proc.kill()
        await proc.wait()


async def allow(stack: Stack, tenant: str, **rule: object) -> None:
    rules = policy_pb2.PolicyRules(
        allowed_domains=[HOST],
        allowed_networks=["127.0.0.1/32"],
        domain_rules=[policy_pb2.DomainRule(domain=HOST, **rule)] if rule else [],  # type: ignore[arg-type]
    )
    async with grpc.aio.insecure_channel(stack.target("policy")) as channel:
        await policy_service_pb2_grpc.PolicyServiceStub(channel).CreatePolicy(
            pb.CreatePolicyRequest(
                request_id=f"bench-{tenant}",
                policy=policy_pb2.Policy(display_name="bench", rules=rules),
            ),
            metadata=metadata(tenant),
        )


async def permits(
    stack: Stack, url: str, tenant: str, args: argparse.Namespace
) -> dict[str, float]:
    async with grpc.aio.insecure_channel(stack.target("policy")) as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        meta = metadata(tenant)
        request = pb.AcquirePermitRequest(url=url, engine=js.ENGINE_HTTP)
        request.lease.FromSeconds(30)

        async def call() -> None:
            answer = await stub.AcquirePermit(request, metadata=meta)
            if not answer.granted:
                raise RuntimeError(f"not granted: {answer}")
            if answer.permit_id:
                await stub.ReleasePermit(
                    pb.ReleasePermitRequest(permit_id=answer.permit_id), metadata=meta
                )

        await closed_loop(call, 200, args.clients)  # warm: robots.txt is fetched once
        return await closed_loop(call, args.calls, args.clients)


async def engine_jobs(
    stack: Stack, url: str, args: argparse.Namespace, tenant: str | None
) -> dict[str, float]:
    """The engine in its own process, as in the executor; its JSON result."""
    argv = [str(ENGINE), url, str(args.jobs), str(args.concurrency), *([tenant] if tenant else [])]
    env = stack.env | {"ACCORD_EXECUTOR_POLICY_TARGET": stack.target("policy")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE, env=env
    )
    try:
        async with asyncio.timeout(600):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the engine process exited with code {proc.returncode}")
    result: dict[str, float] = json.loads(out)
    result["per_s"] = result["requests"] / result["seconds"]
    return result


async def measure(stack: Stack, url: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    phase(f"raw grpc.aio echo: {args.calls} calls from {args.clients} clients")
    results["echo"] = await echo_baseline(args.calls, args.clients)
    await allow(stack, "bench-check")
    phase(f"AcquirePermit, no limits on the host: {args.calls} calls")
    results["check"] = await permits(stack, url, "bench-check", args)
    await allow(
        stack, "bench-permit", requests_per_second=10000, burst=10000, max_concurrency=10000
    )
    phase(f"AcquirePermit + ReleasePermit, host with rate and cap: {args.calls} calls")
    results["permit"] = await permits(stack, url, "bench-permit", args)
    phase(f"raw aiohttp loop: {args.jobs} requests at concurrency {args.concurrency}")
    raw = await raw_baseline(url, args.jobs, args.concurrency, 600)
    results["raw"] = {"per_s": raw["requests"] / raw["seconds"]}
    phase(f"HTTP engine, no checks: {args.jobs} jobs")
    results["engine"] = await engine_jobs(stack, url, args, None)
    phase(f"HTTP engine, AcquirePermit before every request: {args.jobs} jobs")
    results["engine_checked"] = await engine_jobs(stack, url, args, "bench-check")
    return results


def report(args: argparse.Namespace, r: dict[str, dict[str, float]]) -> None:
    print(
        f"Per-request checks: {args.calls} policy calls from {args.clients} clients; "
        f"{args.jobs} engine jobs at concurrency {args.concurrency}\n"
    )
    rows = [
        ("raw grpc.aio echo", r["echo"]),
        ("AcquirePermit (check, host without limits)", r["check"]),
        ("AcquirePermit + ReleasePermit (rate + cap)", r["permit"]),
    ]
    print(f"{'policy calls':46} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    for name, row in rows:
        print(f"{name:46} {row['per_s']:8.0f} {row['p50']:7.1f} {row['p99']:7.1f}")
    print()
    print(f"{'HTTP requests':46} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}")
    print(f"{'raw aiohttp loop (own process)':46} {r['raw']['per_s']:8.0f}")
    for name, key in (
        ("engine, no checks", "engine"),
        ("engine, a check per request", "engine_checked"),
    ):
        row = r[key]
        print(f"{name:46} {row['per_s']:8.0f} {row['p50']:7.1f} {row['p99']:7.1f}")
    ratio = r["engine_checked"]["per_s"] / r["raw"]["per_s"]
    print(f"\nratio: checked engine / raw aiohttp = {ratio:.3f} (target >= 0.5)")
    print(json.dumps(r), file=sys.stderr)


async def run(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    settings = {f"ACCORD_{s.upper()}_LOG_LEVEL": "warning" for s in SERVICES}
    with workdir(args.workdir) as wd:
        phase(f"starting PostgreSQL, NATS and the four services under {wd}")
        async with serve_page() as url, running_stack(wd, settings) as stack:
            results = await measure(stack, url, args)
        phase("stopped")
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse_args())))
