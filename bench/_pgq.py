"""The no-op baseline: pgqueuer draining N no-op jobs from the same PostgreSQL as Accord.

Runs as its own process, as an executor does. Usage:
`python bench/_pgq.py DSN JOBS BATCH_SIZE WORKERS`. It installs pgqueuer's tables in the
schema named by PGQUEUER_SCHEMA (or empties them), enqueues JOBS no-op jobs in batched
inserts and prints `{"enqueue_seconds": ...}`; then waits for a line on stdin (the parent
reads its CPU counters meanwhile), drains the queue and prints one JSON object with the
drain's figures, timed from the first job's start (as Accord's drain is timed from the
executor's resumption) to the moment every job is logged done.

Set up for speed the way pgqueuer's own drain benchmark is: the asyncpg driver (one
connection per queue manager), uvloop, drain mode, batched dequeue, no concurrency cap,
WORKERS queue managers in this one process. Its tables keep the default durability
(logged, as Accord's are).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import asyncpg
import uvloop
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "noop"
ENQUEUE_BATCH = 10_000
DRAIN_TIMEOUT = 600.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def prepare(dsn: str, jobs: int) -> float:
    """A fresh, empty queue holding `jobs` no-op jobs; returns the seconds enqueueing took."""
    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        if await queries.schema_is_installed():
            await queries.clear_queue()
            await queries.clear_queue_log()
            await queries.clear_statistics_log()
        else:
            await queries.install()
        started = time.perf_counter()
        for start in range(0, jobs, ENQUEUE_BATCH):
            n = min(ENQUEUE_BATCH, jobs - start)
            await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        return time.perf_counter() - started
    finally:
        await connection.close()


async def drain(dsn: str, batch_size: int, workers: int) -> dict[str, float]:
    """Run `workers` queue managers in drain mode until the queue is empty and logged."""
    connections = [await asyncpg.connect(dsn) for _ in range(workers)]
    done, first = 0, 0.0
    managers = []
    for connection in connections:
        qm = QueueManager(Queries(AsyncpgDriver(connection)))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(_: Job) -> None:
            nonlocal done, first
            first = first or time.perf_counter()
            done += 1

        managers.append(qm)
    try:
        cpu, started = cpu_seconds(), time.perf_counter()
        # run() returns once its completion buffer is flushed: every job is logged as done.
        runs = (
            qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain, max_concurrent_tasks=None)
            for qm in managers
        )
        async with asyncio.timeout(DRAIN_TIMEOUT):
            await asyncio.gather(*runs)
        ended, cpu = time.perf_counter(), cpu_seconds() - cpu
        queries = Queries(AsyncpgDriver(connections[0]))
        left = sum(s.count for s in await queries.queue_size())
        return {
            "jobs": done,
            "seconds": ended - first,  # first job started to every job logged done
            "seconds_with_startup": ended - started,
            "cpu_seconds": cpu,
            "left_in_queue": left,
        }
    finally:
        for connection in connections:
            await connection.close()


async def main(dsn: str, jobs: int, batch_size: int, workers: int) -> None:
    print(json.dumps({"enqueue_seconds": await prepare(dsn, jobs)}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    print(json.dumps(await drain(dsn, batch_size, workers)), flush=True)


if __name__ == "__main__":
    dsn, jobs, batch_size, workers = sys.argv[1], *map(int, sys.argv[2:5])
    uvloop.run(main(dsn, jobs, batch_size, workers))
