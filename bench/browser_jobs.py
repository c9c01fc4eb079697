"""Benchmark: browser jobs through all four services versus a raw Playwright loop.

Each job loads a small local page in a fresh context and extracts from it (no screenshot);
the raw loop does the same with Playwright alone, one fresh context per page, at the same
concurrency. Prints pages/s of each, their ratio, and the memory one context costs.
Usage: uv run python bench/browser_jobs.py [--jobs 200] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import grpc
from _common import metadata, phase, workdir
from _cpu import cpu_seconds, usage
from _stack import SERVICES, Stack, StackError, running_stack
from http_jobs import RPC_TIMEOUT, allow_local, serve_page, tally, wait_finished

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import job_service_pb2, job_service_pb2_grpc
from accord_executor.engines.browser import find_browser
from accord_kit.embedded import EmbeddedError

RAW_CLIENT = Path(__file__).with_name("_raw_browser.py")
RATIO_TARGET = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="jobs (and raw page loads), N")
    parser.add_argument("--concurrency", type=int, default=4, help="browser pool = raw workers")
    parser.add_argument("--warmup", type=int, default=8, help="jobs run before measuring")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds per phase, max")
    parser.add_argument("--workdir", type=Path, help="keep data and service logs here")
    args = parser.parse_args(argv)
    if min(args.jobs, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--jobs and --concurrency must be positive")
    return args


def browser_job(url: str) -> js.JobSpec:
    return js.JobSpec(
        engine=js.ENGINE_BROWSER,
        steps=[
            js.Step(request=js.RequestStep(url=url)),
            js.Step(name="heading", extract=js.ExtractStep(selector="h1", all=True)),
        ],
    )


async def create(jobs: job_service_pb2_grpc.JobServiceStub, tenant: str, url: str, n: int) -> None:
    request = job_service_pb2.BatchCreateJobsRequest(
        request_id=f"{tenant}-all", specs=[browser_job(url)] * n
    )
    await jobs.BatchCreateJobs(request, metadata=metadata(tenant), timeout=RPC_TIMEOUT)


async def suite(stack: Stack, url: str, args: argparse.Namespace) -> dict[str, object]:
    run = uuid.uuid4().hex[:8]
    async with grpc.aio.insecure_channel(stack.target("orchestrator")) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        loop = asyncio.get_running_loop()
        if args.warmup:
            tenant = f"bench-{run}-warm"
            await allow_local(stack, tenant)
            await create(jobs, tenant, url, args.warmup)
            await wait_finished(jobs, tenant, loop.time() + args.deadline)
        tenant = f"bench-{run}"
        await allow_local(stack, tenant)
        cpu = cpu_seconds(stack)
        started = time.perf_counter()
        await create(jobs, tenant, url, args.jobs)
        await wait_finished(jobs, tenant, loop.time() + args.deadline)
        seconds = time.perf_counter() - started
        cpu_used = usage(cpu, cpu_seconds(stack), seconds)
        done = await tally(jobs, tenant)
    return {"seconds": seconds, "states": done.states, "window": done.window, "cpu": cpu_used}


async def raw(url: str, args: argparse.Namespace, chromium: str) -> dict[str, float]:
    argv = [str(RAW_CLIENT), url, str(args.jobs), str(args.concurrency), chromium]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(args.deadline):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise StackError(f"the raw Playwright loop exited with code {proc.returncode}")
    result: dict[str, float] = json.loads(out)
    return result


async def run(args: argparse.Namespace) -> int:
    probe = await find_browser(None)
    if probe.executable is None:
        raise StackError(probe.reason)
    settings = {f"ACCORD_{s.upper()}_LOG_LEVEL": "warning" for s in SERVICES}
    settings["ACCORD_EXECUTOR_BROWSER_CONCURRENCY"] = str(args.concurrency)
    settings["ACCORD_EXECUTOR_PREFETCH"] = str(args.concurrency)
    with workdir(args.workdir) as wd:
        settings["ACCORD_EXECUTOR_ARTIFACT_DIR"] = str(wd / "artifacts")
        async with serve_page() as url:
            phase(f"raw Playwright loop: {args.jobs} pages at concurrency {args.concurrency}")
            before = await raw(url, args, probe.executable)
            phase(f"starting the stack under {wd}")
            async with running_stack(wd, settings) as stack:
                phase(f"suite: {args.jobs} browser jobs, browser pool of {args.concurrency}")
                measured = await suite(stack, url, args)
                stack.check_alive()
            # Again after: on a shared machine the load drifts; the ratio is to the mean.
            phase("raw Playwright loop again")
            after = await raw(url, args, probe.executable)
    suite_rate = args.jobs / float(measured["seconds"])  # type: ignore[arg-type]
    raw_rate = (before["pages_per_s"] + after["pages_per_s"]) / 2
    ratio = suite_rate / raw_rate
    mb = (before["mb_per_context"] + after["mb_per_context"]) / 2
    print(f"browser jobs: {args.jobs} pages at concurrency {args.concurrency} ({probe.executable})")
    print(
        f"  raw Playwright loop     {raw_rate:7.2f} pages/s  "
        f"(before {before['pages_per_s']:.2f}, after {after['pages_per_s']:.2f})"
    )
    print(f"  Accord, BatchCreateJobs {suite_rate:7.2f} pages/s  (first create to last done)")
    print(f"  ratio                   {ratio:7.2f}  (target >= {RATIO_TARGET})")
    print(f"  memory per context      {mb:7.1f} MiB (Chromium RSS, page loaded)")
    print(f"  job states              {measured['states']}")
    print(f"  suite CPU               {measured['cpu']}")
    return 0


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything the bench started has been stopped", file=sys.stderr)
        return 130
    except (StackError, EmbeddedError, TimeoutError) as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
