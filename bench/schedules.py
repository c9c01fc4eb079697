"""Benchmark: schedule fire lag with many active schedules, and the orchestrator's idle CPU.

Usage: uv run python bench/schedules.py [--schedules 10000] [--minutes 2] [--lead 120]

N schedules fire once a minute each, their fires spread evenly over the minute (interval
60 s, start times N/60 s apart), jitter off. The first fires are `--lead` seconds after the
bench starts creating them; the orchestrator's CPU is measured while nothing is due yet
(after creation, before the first fire). Then fires run for `--minutes`, and the lag of each
(its job's creation time minus its nominal time, from PostgreSQL) is reported as p50, p99
and max. The executor is stopped first: jobs stay queued, nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from _common import phase, workdir
from _cpu import cpu_seconds
from _progress import plain_url
from _stack import SERVICES, Stack, StackError, running_stack, stop_service
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import schedule_pb2, schedule_service_pb2, schedule_service_pb2_grpc
from accord_kit import tokens
from accord_kit.auth import bearer
from accord_kit.embedded import EmbeddedError

TENANT = "bench-schedules"
CLIENTS = 16


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--schedules", type=int, default=10_000, help="active schedules, one fire a minute each")
    add("--minutes", type=float, default=2.0, help="minutes of fires measured")
    add("--lead", type=float, default=150.0, help="seconds from start of creation to first fire")
    add("--idle-seconds", type=float, default=20.0, help="longest idle CPU window")
    add("--passes", type=int, default=4, help="firing passes at once per orchestrator")
    add("--log-level", default="warning")
    add("--workdir", type=Path, default=None, help="keep the stack's files here")
    return parser.parse_args()


def metadata() -> tuple[tuple[str, str], ...]:
    key = tokens.read_private_key(Path(os.environ["ACCORD_AUTH_SIGNING_KEY_FILE"]))
    token = tokens.issue(
        key,
        subject="bench:schedules",
        tenant=TENANT,
        scopes=("schedules:read", "schedules:write", "jobs:read"),
        ttl=timedelta(hours=12),
    )
    return bearer(token)


def schedule(i: int, first: datetime, n: int) -> schedule_pb2.Schedule:
    s = schedule_pb2.Schedule(
        display_name=f"bench-{i}",
        spec=schedule_pb2.ScheduleSpec(interval=duration_pb2.Duration(seconds=60)),
        job_template=job_spec_pb2.JobSpec(
            engine=job_spec_pb2.ENGINE_HTTP,
            steps=[
                job_spec_pb2.Step(
                    name="p", request=job_spec_pb2.RequestStep(url="http://127.0.0.1:9/")
                )
            ],
        ),
        overlap_policy=schedule_pb2.OVERLAP_POLICY_ALLOW_ALL,
    )
    s.spec.start_time.FromDatetime(first + timedelta(seconds=60 * i / n))
    return s


async def create_all(stack: Stack, n: int, first: datetime) -> None:
    md = metadata()
    async with grpc.aio.insecure_channel(stack.target("orchestrator")) as ch:
        stub = schedule_service_pb2_grpc.ScheduleServiceStub(ch)
        todo = iter(range(n))

        async def client() -> None:
            for i in todo:
                await stub.CreateSchedule(
                    schedule_service_pb2.CreateScheduleRequest(
                        request_id=f"bench-{i}-{uuid.uuid4().hex[:6]}",
                        schedule=schedule(i, first, n),
                    ),
                    metadata=md,
                    timeout=60,
                )

        await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def lags(stack: Stack, since: datetime, until: datetime) -> list[float]:
    conn = await asyncpg.connect(plain_url(stack.env["ACCORD_DATABASE_URL"]))
    try:
        rows = await conn.fetch(
            """
            SELECT extract(epoch FROM j.create_time - a.schedule_time) AS lag
            FROM orchestrator.schedule_actions AS a
            JOIN orchestrator.jobs AS j ON j.job_id = a.job_id
            WHERE a.schedule_time >= $1 AND a.schedule_time < $2
            """,
            since,
            until,
        )
    finally:
        await conn.close()
    return sorted(float(r["lag"]) for r in rows)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


async def measure(stack: Stack, args: argparse.Namespace) -> int:
    await stop_service(stack, "executor")  # jobs stay queued; nothing is fetched
    first = datetime.now(UTC) + timedelta(seconds=args.lead)
    phase(f"creating {args.schedules} schedules; first fire at {first:%H:%M:%S}")
    t0 = time.monotonic()
    await create_all(stack, args.schedules, first)
    created = time.monotonic() - t0
    idle = min(args.idle_seconds, (first - datetime.now(UTC)).total_seconds() - 2)
    idle_share = float("nan")
    if idle > 1:
        phase(f"measuring the orchestrator's CPU for {idle:.0f} s while nothing is due")
        before = cpu_seconds(stack)
        await asyncio.sleep(idle)
        after = cpu_seconds(stack)
        idle_share = (after["orchestrator"] - before["orchestrator"]) / idle
    else:
        phase("creation took past the first fire: no idle window (raise --lead)")
    until = first + timedelta(minutes=args.minutes)
    phase(f"fires run until {until:%H:%M:%S}")
    wait = (until - datetime.now(UTC)).total_seconds() + 5
    busy_before = cpu_seconds(stack)
    await asyncio.sleep(max(wait, 0))
    busy_after = cpu_seconds(stack)
    busy = {n: (busy_after[n] - busy_before[n]) / wait for n in busy_after if n in busy_before}
    found = await lags(stack, first, until)
    expected = int(args.schedules * args.minutes)
    print(
        f"schedules: {args.schedules}, fires spread over each minute, jitter off, "
        f"{args.passes} firing passes at once"
    )
    print(f"created in {created:.1f} s ({args.schedules / created:.0f}/s, {CLIENTS} clients)")
    print(f"orchestrator CPU while nothing is due: {idle_share:.1%} of a core over {idle:.0f} s")
    print(f"fires measured: {len(found)} of {expected} due in {args.minutes:g} min")
    print(
        "fire lag (job created - nominal): "
        f"p50 {pct(found, 0.5) * 1000:.0f} ms, p99 {pct(found, 0.99) * 1000:.0f} ms, "
        f"max {(found[-1] if found else float('nan')) * 1000:.0f} ms"
    )
    print(
        "CPU while firing (share of a core): "
        + ", ".join(f"{n} {v:.0%}" for n, v in sorted(busy.items(), key=lambda kv: -kv[1]))
    )
    return 0


async def run(args: argparse.Namespace) -> int:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    settings = {f"ACCORD_{s.upper()}_LOG_LEVEL": args.log_level for s in SERVICES}
    settings["ACCORD_ORCHESTRATOR_SCHEDULE_PASSES"] = str(args.passes)
    with workdir(args.workdir) as wd:
        phase(f"starting PostgreSQL, NATS and the four services under {wd}")
        async with running_stack(wd, settings) as stack:
            code = await measure(stack, args)
        phase("stopped")
    return code


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
