"""Benchmark: no-op jobs through all four services beside pgqueuer, admission, CreateJob latency.

Usage: uv run python bench/noop_jobs.py [--jobs 2000] [--concurrency 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import grpc
from _common import metadata, phase, workdir
from _cpu import cpu_seconds, per_job
from _noop_report import CREATE_P99_TARGET_MS, Drained, Results, as_json, print_report
from _open_loop import Load, offer
from _progress import plain_url, progress, wait_audited, wait_settled
from _stack import SERVICES, Stack, StackError, running_stack
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_service_pb2, job_service_pb2_grpc
from accord_kit.embedded import EmbeddedError

if TYPE_CHECKING:
    from accord.orchestrator.v1.job_service_pb2_grpc import JobServiceAsyncStub as Jobs

PGQ_CLIENT = Path(__file__).with_name("_pgq.py")
# pgqueuer's tables live in a schema of their own, beside Accord's.
PGQ_SCHEMA = "pgqueuer_bench"
BATCH_SIZE = 1000  # BatchCreateJobs' limit (job_service.proto)
RPC_TIMEOUT = 30.0
BATCH_TIMEOUT = 300.0
PGQ_TIMEOUT = 600.0
WARM_RATE, WARM_SECONDS = 50.0, 2.0
LEASE_SECONDS = 600  # the executor's longest
# The flags a run's figures are printed and saved with.
SETTINGS = ("jobs", "concurrency", "pgq_batch_size", "pgq_workers", "pgq_runs", "rate")
SETTINGS += ("rate_seconds", "step_rates", "step_seconds", "warmup", "log_level")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--jobs", type=int, default=2000, help="no-op jobs drained by Accord and by pgqueuer")
    add("--concurrency", type=int, default=256, help="executor concurrency (jobs at once)")
    add("--pgq-batch-size", type=int, default=100, help="pgqueuer dequeue batch size")
    add("--pgq-workers", type=int, default=2, help="pgqueuer queue managers (one connection each)")
    add("--pgq-runs", type=int, default=3, help="pgqueuer drains; the median is reported")
    add("--rate", type=float, default=200.0, help="CreateJob calls/s offered, open loop")
    add("--rate-seconds", type=float, default=10.0, help="seconds at --rate")
    add("--steps", default="10,25,50,100,200,400,800,1600", help="CreateJob calls/s, stepped up")
    add("--step-seconds", type=float, default=3.0, help="seconds per step")
    add("--warmup", type=int, default=200, help="no-op jobs run before measuring")
    add("--deadline", type=float, default=300.0, help="seconds any one wait may take, max")
    add("--log-level", default="info", help="log level of the four services")
    add("--json", type=Path, help="also write the figures to this file as JSON")
    add("--workdir", type=Path, help="keep data and service logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    args.step_rates = [float(x) for x in args.steps.split(",") if x.strip()]
    if min(args.jobs, args.concurrency, args.pgq_batch_size, args.pgq_workers, args.pgq_runs) < 1:
        parser.error("--jobs, --concurrency and the pgqueuer settings must be positive")
    if min([args.rate, args.rate_seconds, args.step_seconds, *args.step_rates]) <= 0:
        parser.error("rates and durations must be positive")
    return args


def noop_job() -> job_spec_pb2.JobSpec:
    """One step that waits 0 s: the job costs nothing but Accord's own work.

    It names no URL, so the tenant's default policy admits it: no policy needs creating.
    """
    step = job_spec_pb2.Step(wait_for=job_spec_pb2.WaitForStep(delay=duration_pb2.Duration()))
    return job_spec_pb2.JobSpec(engine=job_spec_pb2.ENGINE_HTTP, steps=[step])


async def batch_create(jobs: Jobs, tenant: str, n: int) -> int:
    """N jobs through BatchCreateJobs, BATCH_SIZE per call, one call after another."""
    created, spec = 0, noop_job()
    for start in range(0, n, BATCH_SIZE):
        request = job_service_pb2.BatchCreateJobsRequest(
            request_id=f"{tenant}-{start}", specs=[spec] * min(BATCH_SIZE, n - start)
        )
        reply = await jobs.BatchCreateJobs(
            request, metadata=metadata(tenant), timeout=BATCH_TIMEOUT
        )
        created += len(reply.jobs)
    return created


class Bench:
    """One run's handles: the stack, a JobService stub, a database connection, the deadline."""

    def __init__(
        self, stack: Stack, jobs: Jobs, db: asyncpg.Connection, args: argparse.Namespace
    ) -> None:
        self.stack, self.jobs, self.db, self.args = stack, jobs, db, args
        self.run = uuid.uuid4().hex[:8]

    def tenant(self, name: str) -> str:
        return f"bench-{self.run}-{name}"

    def deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.args.deadline

    async def settle(self, tenant: str, expect: int | None = None) -> None:
        """Wait until the tenant's jobs are settled; all (`expect`) of them must have succeeded."""
        done = await wait_settled(self.db, tenant, self.deadline())
        if done.succeeded != done.jobs or (expect is not None and done.jobs != expect):
            raise StackError(f"{tenant}: {done.succeeded} of {done.jobs} jobs SUCCEEDED")

    async def warm_up(self) -> None:
        """Connections, pools and caches warm, through the whole path."""
        tenant = self.tenant("warmup")
        await batch_create(self.jobs, tenant, self.args.warmup)
        await self.settle(tenant, self.args.warmup)

    async def accord_drain(self) -> tuple[float, dict[str, float], Drained]:
        """N jobs admitted while the executor is paused, then drained by it, warm.

        Returns admission's seconds (the BatchCreateJobs calls alone) and CPU per job (until
        the audit log holds the admission's events), then the drain: from the executor's
        resumption to the later of the last job's finish and its last audit record.
        """
        n, tenant = self.args.jobs, self.tenant("drain")
        with paused(self.stack, "executor"):
            cpu, started = cpu_seconds(self.stack), time.perf_counter()
            admitted = await batch_create(self.jobs, tenant, n)
            admit_seconds = time.perf_counter() - started
            await wait_audited(self.db, tenant, self.deadline())
            admit_cpu = per_job(cpu, cpu_seconds(self.stack), admitted)
            cpu, resumed = cpu_seconds(self.stack), datetime.now(UTC)
        await self.settle(tenant, admitted)
        drain_cpu = per_job(cpu, cpu_seconds(self.stack), admitted)
        done = await progress(self.db, tenant)
        drained = Drained(admitted, done.seconds_since(resumed), drain_cpu)
        if done.last_finish is not None and done.last_append is not None:
            finished, audited = (t - resumed for t in (done.last_finish, done.last_append))
            drained.note = (
                f"Accord drain: last job finished {finished.total_seconds():.2f} s after the "
                f"resumption, last audit record {audited.total_seconds():.2f} s after"
            )
        return admit_seconds, admit_cpu, drained

    async def pgqueuer_drain(self) -> tuple[float, Drained]:
        """The same number of no-op jobs through pgqueuer, on the same PostgreSQL.

        Its drain is over in a fraction of a second, so it runs `--pgq-runs` times; the
        median run is reported (its enqueue time and CPU too), the others in its note.
        """
        runs = [await self.pgqueuer_once() for _ in range(self.args.pgq_runs)]
        runs.sort(key=lambda run: run[0])
        enqueue_seconds, median = runs[len(runs) // 2][1:]
        rates = ", ".join(f"{d.rate:.0f}" for _, _, d in runs)
        median.note = f"pgqueuer runs, jobs/s: {rates} (median reported)"
        return enqueue_seconds, median

    async def pgqueuer_once(self) -> tuple[float, float, Drained]:
        """One pgqueuer run in its own process: (drain seconds, enqueue seconds, drain)."""
        args = self.args
        argv = [str(PGQ_CLIENT), plain_url(self.stack.env["ACCORD_DATABASE_URL"])]
        argv += [str(args.jobs), str(args.pgq_batch_size), str(args.pgq_workers)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=os.environ | {"PGQUEUER_SCHEMA": PGQ_SCHEMA},
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(PGQ_TIMEOUT):
                enqueued = json.loads(await proc.stdout.readline())
                cpu = cpu_seconds(self.stack)
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
                drained = json.loads(await proc.stdout.readline())
                after = cpu_seconds(self.stack)
                await proc.wait()
        except json.JSONDecodeError as exc:
            raise StackError("pgqueuer's run ended early (its error is above)") from exc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if drained["jobs"] != args.jobs or drained["left_in_queue"]:
            raise StackError(f"pgqueuer did not drain every job: {drained}")
        cpu_ms = {"pgqueuer worker": drained["cpu_seconds"] * 1000 / args.jobs}
        cpu_ms |= {k: v for k, v in per_job(cpu, after, args.jobs).items() if k == "postgres"}
        drain = Drained(args.jobs, drained["seconds"], cpu_ms)
        return drained["seconds"], enqueued["enqueue_seconds"], drain

    async def create_job_load(self) -> tuple[Load, dict[str, float], list[Load]]:
        """CreateJob open loop: warm-up, the steady rate (with CPU per call), then the steps."""
        await self.offer("warm", WARM_RATE, WARM_SECONDS)
        cpu = cpu_seconds(self.stack)
        steady = await self.offer("steady", self.args.rate, self.args.rate_seconds)
        steady_cpu = per_job(cpu, cpu_seconds(self.stack), len(steady.latencies))
        steps: list[Load] = []
        for rate in self.args.step_rates:
            phase(f"CreateJob step: {rate:g} calls/s for {self.args.step_seconds:g} s")
            steps.append(await self.offer(f"step{rate:g}", rate, self.args.step_seconds))
            if steps[-1].p(99) > CREATE_P99_TARGET_MS:
                break
        return steady, steady_cpu, steps

    async def offer(self, name: str, rate: float, seconds: float) -> Load:
        """CreateJob at `rate` for `seconds`, then wait until those jobs have run and settled."""
        tenant, spec = self.tenant(name), noop_job()

        async def create(i: int) -> object:
            request = job_service_pb2.CreateJobRequest(request_id=f"{tenant}-{i}", spec=spec)
            return await self.jobs.CreateJob(
                request, metadata=metadata(tenant), timeout=RPC_TIMEOUT
            )

        load = await offer(create, rate, seconds)
        # A call that timed out may still have created its job: the count is not checked.
        await self.settle(tenant)
        return load


@contextlib.contextmanager
def paused(stack: Stack, name: str) -> Iterator[None]:
    """Stop a service's process (SIGSTOP) and let it go on (SIGCONT) on the way out.

    Paused rather than restarted, it keeps its warm connections and caches. A long poll it
    had open may still be granted up to `--concurrency` leases meanwhile; they run after.
    """
    pid = stack.procs[name].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def measure(stack: Stack, args: argparse.Namespace) -> Results:
    async with (
        grpc.aio.insecure_channel(stack.target("orchestrator")) as channel,
        _connect(stack) as db,
    ):
        bench = Bench(stack, job_service_pb2_grpc.JobServiceStub(channel), db, args)
        if args.warmup:
            phase(f"warm-up: {args.warmup} no-op jobs")
            await bench.warm_up()
        phase(f"Accord: {args.jobs} jobs via BatchCreateJobs (executor paused), then drained")
        admit_seconds, admit_cpu, accord = await bench.accord_drain()
        phase(f"pgqueuer: {args.jobs} jobs enqueued, then drained, {args.pgq_runs} times")
        pgq_enqueue, pgq = await bench.pgqueuer_drain()
        phase(f"CreateJob, open loop: {args.rate:g} calls/s for {args.rate_seconds:g} s")
        steady, steady_cpu, steps = await bench.create_job_load()
    stack.check_alive()
    settings = {k: getattr(args, k) for k in SETTINGS}
    return Results(
        settings=settings,
        admitted=accord.jobs,
        admit_seconds=admit_seconds,
        admit_cpu_ms=admit_cpu,
        accord=accord,
        pgqueuer=pgq,
        pgq_enqueue_seconds=pgq_enqueue,
        steady=steady,
        steady_cpu_ms=steady_cpu,
        steps=steps,
    )


@contextlib.asynccontextmanager
async def _connect(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain_url(stack.env["ACCORD_DATABASE_URL"]))
    try:
        yield conn
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM unwinds like Ctrl-C: every finally below stops what it started.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    settings = {f"ACCORD_{s.upper()}_LOG_LEVEL": args.log_level for s in SERVICES}
    settings["ACCORD_EXECUTOR_CONCURRENCY"] = str(args.concurrency)
    # Leases granted to the paused executor must outlive the pause (admission is slow now).
    settings["ACCORD_EXECUTOR_LEASE_SECONDS"] = str(LEASE_SECONDS)
    with workdir(args.workdir) as wd:
        phase(f"starting PostgreSQL, NATS and the four services under {wd}")
        async with running_stack(wd, settings) as stack:
            results = await measure(stack, args)
        phase("stopped")
    print_report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(results), indent=2) + "\n")
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
