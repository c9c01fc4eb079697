"""Benchmark: CreateJob latency, HTTP job throughput through all four services, raw aiohttp.

Usage: uv run python bench/http_jobs.py --jobs 2000 [--clients 16] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from _common import metadata, phase, workdir
from _cpu import cpu_seconds, usage
from _report import Drain, Results, Tally, print_report
from _stack import SERVICES, Stack, StackError, running_stack, start_service, stop_service
from aiohttp import web

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_kit.embedded import EmbeddedError
from accord_kit.net import free_port

if TYPE_CHECKING:
    from accord.orchestrator.v1.job_service_pb2_grpc import JobServiceAsyncStub as Jobs

HOST = "127.0.0.1"
RAW_CLIENT = Path(__file__).with_name("_raw.py")
PAGE = (
    "<html><head><title>Accord bench</title></head><body><h1>Openings</h1>"
    "<ul><li><a href='/a'>A</a></li><li><a href='/b'>B</a></li></ul></body></html>"
)
# States a job can still leave on its own: a FAILED job is waiting for its retry.
UNFINISHED = [
    job_pb2.JOB_STATE_PENDING,
    job_pb2.JOB_STATE_QUEUED,
    job_pb2.JOB_STATE_RUNNING,
    job_pb2.JOB_STATE_FAILED,
]
RPC_TIMEOUT = 30.0
BATCH_TIMEOUT = 300.0
DONE_POLL_SECONDS = 0.05
BATCH_SIZE = 1000


@dataclass
class Creates:
    """What one CreateJob phase saw: per-call latencies (s), errors by status, wall time."""

    latencies: list[float] = field(default_factory=list)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs (and raw requests), N")
    parser.add_argument("--clients", type=int, default=16, help="concurrent CreateJob callers")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="executor concurrency = raw loop concurrency"
    )
    parser.add_argument("--warmup", type=int, default=100, help="jobs run before measuring")
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds per phase, max")
    parser.add_argument("--log-level", default="info", help="log level of the four services")
    parser.add_argument(
        "--no-queued", action="store_true", help="skip the queued-jobs (executor drain) phase"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep data and service logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.clients, args.concurrency) < 1 or args.warmup < 0:
        parser.error("--jobs, --clients and --concurrency must be positive")
    return args


@contextlib.asynccontextmanager
async def serve_page() -> AsyncIterator[str]:
    """The small local page every job and raw request fetches, served by this loop."""

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port(HOST)
    await web.TCPSite(runner, HOST, port).start()
    try:
        yield f"http://{HOST}:{port}/"
    finally:
        await runner.cleanup()


async def allow_local(stack: Stack, tenant: str) -> None:
    """Let `tenant` fetch 127.0.0.1, which the default policy refuses (private network)."""
    rules = policy_pb2.PolicyRules(allowed_domains=[HOST], allow_private_networks=True)
    async with grpc.aio.insecure_channel(stack.target("policy")) as channel:
        await policy_service_pb2_grpc.PolicyServiceStub(channel).CreatePolicy(
            policy_service_pb2.CreatePolicyRequest(
                request_id="bench-local",
                policy=policy_pb2.Policy(display_name="bench local page", rules=rules),
            ),
            metadata=metadata(tenant),
            timeout=RPC_TIMEOUT,
        )


def http_job(url: str) -> job_spec_pb2.JobSpec:
    """A one-step HTTP job: GET the page."""
    step = job_spec_pb2.Step(request=job_spec_pb2.RequestStep(url=url))
    return job_spec_pb2.JobSpec(engine=job_spec_pb2.ENGINE_HTTP, steps=[step])


async def create_jobs(jobs: Jobs, tenant: str, url: str, n: int, clients: int) -> Creates:
    """N CreateJob calls from `clients` concurrent callers sharing one channel."""
    out = Creates()
    numbers: Iterator[int] = iter(range(n))
    md, spec = metadata(tenant), http_job(url)

    async def caller() -> None:
        for i in numbers:
            request = job_service_pb2.CreateJobRequest(request_id=f"{tenant}-{i}", spec=spec)
            started = time.perf_counter()
            try:
                await jobs.CreateJob(request, metadata=md, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                out.errors[exc.code().name] += 1
                continue
            out.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(clients)))
    out.seconds = time.perf_counter() - started
    return out


async def batch_create(jobs: Jobs, tenant: str, url: str, n: int) -> int:
    """N jobs through BatchCreateJobs, BATCH_SIZE per call, one call after another."""
    created, spec = 0, http_job(url)
    for start in range(0, n, BATCH_SIZE):
        request = job_service_pb2.BatchCreateJobsRequest(
            request_id=f"{tenant}-{start}", specs=[spec] * min(BATCH_SIZE, n - start)
        )
        reply = await jobs.BatchCreateJobs(
            request, metadata=metadata(tenant), timeout=BATCH_TIMEOUT
        )
        created += len(reply.jobs)
    return created


async def wait_finished(jobs: Jobs, tenant: str, deadline: float) -> None:
    """Poll until none of the tenant's jobs is unfinished; TimeoutError past the deadline."""
    request = job_service_pb2.ListJobsRequest(page_size=1, states=UNFINISHED)
    loop = asyncio.get_running_loop()
    while (await jobs.ListJobs(request, metadata=metadata(tenant), timeout=RPC_TIMEOUT)).jobs:
        if loop.time() > deadline:
            raise TimeoutError(f"jobs of {tenant} still unfinished at the deadline")
        await asyncio.sleep(DONE_POLL_SECONDS)


async def tally(jobs: Jobs, tenant: str) -> Tally:
    """Count the tenant's jobs by state and find when their attempts ran (server clock)."""
    counts: collections.Counter[str] = collections.Counter()
    first, last = float("inf"), 0.0
    request = job_service_pb2.ListJobsRequest(page_size=1000)
    for _ in range(10_000):  # bounded: ten million jobs
        reply = await jobs.ListJobs(request, metadata=metadata(tenant), timeout=RPC_TIMEOUT)
        for job in reply.jobs:
            counts[job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")] += 1
            if job.attempts:
                first = min(first, job.attempts[0].start_time.ToNanoseconds() / 1e9)
            last = max(last, job.finish_time.ToNanoseconds() / 1e9)
        if not reply.next_page_token:
            break
        request.page_token = reply.next_page_token
    return Tally(dict(counts), max(last - first, 0.0))


async def raw_baseline(url: str, n: int, concurrency: int, timeout: float) -> dict[str, float]:
    """The raw aiohttp loop, in its own process like the executor; its JSON result."""
    argv = [str(RAW_CLIENT), url, str(n), str(concurrency)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *argv, stdout=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise StackError(f"the raw aiohttp loop exited with code {proc.returncode}")
    result: dict[str, float] = json.loads(out)
    return result


async def through_create_job(
    stack: Stack, jobs: Jobs, tenant: str, url: str, args: argparse.Namespace
) -> tuple[Creates, Drain]:
    """N jobs via CreateJob while the executor runs them: latency, and first create to done."""
    await allow_local(stack, tenant)
    deadline = asyncio.get_running_loop().time() + args.deadline
    cpu = cpu_seconds(stack)
    started = time.perf_counter()
    creates = await create_jobs(jobs, tenant, url, args.jobs, args.clients)
    await wait_finished(jobs, tenant, deadline)
    seconds = time.perf_counter() - started
    cpu_used = usage(cpu, cpu_seconds(stack), seconds)
    drain = Drain(len(creates.latencies), seconds, await tally(jobs, tenant), cpu_used)
    return creates, drain


async def queued(
    stack: Stack, jobs: Jobs, tenant: str, url: str, args: argparse.Namespace
) -> tuple[float, Drain]:
    """N jobs queued with the executor stopped, then drained by it.

    Returns BatchCreateJobs' admission rate (jobs/s) and the drain, timed on the server's
    clock from the first attempt's start to the last job's finish.
    """
    await allow_local(stack, tenant)
    await stop_service(stack, "executor")
    started = time.perf_counter()
    accepted = await batch_create(jobs, tenant, url, args.jobs)
    admitted = accepted / (time.perf_counter() - started)
    deadline = asyncio.get_running_loop().time() + args.deadline
    await start_service(stack, "executor")
    # From here: the executor may have leased a little while starting (the window counts it).
    cpu = cpu_seconds(stack)
    started = time.perf_counter()
    await wait_finished(jobs, tenant, deadline)
    wall = time.perf_counter() - started
    cpu_used = usage(cpu, cpu_seconds(stack), wall)
    done = await tally(jobs, tenant)
    return admitted, Drain(accepted, done.window, done, cpu_used)


async def warm_up(stack: Stack, jobs: Jobs, tenant: str, url: str, n: int) -> None:
    """Run a few jobs first so that connections, pools and caches are warm."""
    await allow_local(stack, tenant)
    deadline = asyncio.get_running_loop().time() + RPC_TIMEOUT * 4
    await create_jobs(jobs, tenant, url, n, 4)
    await wait_finished(jobs, tenant, deadline)
    states = (await tally(jobs, tenant)).states
    if states != {"SUCCEEDED": n}:
        raise StackError(f"warm-up jobs did not all succeed: {states}")


async def measure(stack: Stack, url: str, args: argparse.Namespace) -> Results:
    run = uuid.uuid4().hex[:8]
    phase(f"raw aiohttp loop: {args.jobs} requests at concurrency {args.concurrency}")
    raw = await raw_baseline(url, args.jobs, args.concurrency, args.deadline)
    async with grpc.aio.insecure_channel(stack.target("orchestrator")) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        if args.warmup:
            phase(f"warm-up: {args.warmup} jobs")
            await warm_up(stack, jobs, f"bench-{run}-warmup", url, args.warmup)
        phase(f"CreateJob: {args.jobs} jobs from {args.clients} clients, until all finish")
        creates, drain = await through_create_job(stack, jobs, f"bench-{run}-create", url, args)
        results = Results(raw, creates.latencies, creates.seconds, dict(creates.errors), drain)
        if not args.no_queued:
            phase(f"queued: {args.jobs} jobs via BatchCreateJobs, then the executor drains them")
            results.admitted, results.queued = await queued(
                stack, jobs, f"bench-{run}-queued", url, args
            )
    stack.check_alive()
    return results


async def run(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM unwinds like Ctrl-C: every finally below stops what it started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    settings = {f"ACCORD_{s.upper()}_LOG_LEVEL": args.log_level for s in SERVICES}
    settings["ACCORD_EXECUTOR_CONCURRENCY"] = str(args.concurrency)
    with workdir(args.workdir) as wd:
        phase(f"starting PostgreSQL, NATS and the four services under {wd}")
        async with serve_page() as url, running_stack(wd, settings) as stack:
            results = await measure(stack, url, args)
        phase("stopped")
    print_report(args, results)
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
