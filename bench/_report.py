"""What a benchmark run measured, and the table it prints against the DESIGN targets."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

Row = tuple[str, str, str, str]

CREATE_P99_TARGET_MS = 10.0
RAW_RATIO_TARGET = 0.5
QUEUED_RATE_TARGET = 1000.0


@dataclass
class Tally:
    """A tenant's jobs at the end: how many in each state, and when work on them ran."""

    states: dict[str, int]
    # Server clock: first attempt's start to last job's finish, in seconds.
    window: float


@dataclass
class Drain:
    """One throughput phase: jobs accepted, seconds it took, final states, CPU shares."""

    jobs: int
    seconds: float
    tally: Tally
    cpu: str

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Results:
    """Everything one run measured."""

    raw: dict[str, float]
    latencies: list[float]  # seconds, one per successful CreateJob
    create_seconds: float
    create_errors: dict[str, int]
    create_drain: Drain
    admitted: float | None = None  # BatchCreateJobs jobs/s, executor stopped
    queued: Drain | None = None

    @property
    def raw_rate(self) -> float:
        return self.raw["requests"] / self.raw["seconds"]


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def create_rows(results: Results) -> list[Row]:
    ms = sorted(s * 1000 for s in results.latencies)
    p99 = percentile(ms, 99)
    rate = len(ms) / results.create_seconds if results.create_seconds > 0 else 0.0
    return [
        ("CreateJob p50 (ms)", f"{percentile(ms, 50):.1f}", "", ""),
        ("CreateJob p95 (ms)", f"{percentile(ms, 95):.1f}", "", ""),
        ("CreateJob p99 (ms)", f"{p99:.1f}", "< 10", verdict(p99 < CREATE_P99_TARGET_MS)),
        ("CreateJob calls/s", f"{rate:.0f}", "", ""),
    ]


def throughput_rows(results: Results, concurrency: int) -> list[Row]:
    raw = results.raw_rate
    e2e = results.create_drain.rate
    rows = [
        ("HTTP jobs/s, first CreateJob to all SUCCEEDED", f"{e2e:.0f}", "", ""),
        (f"raw aiohttp req/s, concurrency {concurrency}", f"{raw:.0f}", "", ""),
        ("ratio: Accord jobs/s / raw req/s", f"{e2e / raw:.4f}", ">= 0.5", _ratio(e2e, raw)),
    ]
    if results.queued is not None and results.admitted is not None:
        drained = results.queued.rate
        rows += [
            ("BatchCreateJobs admitted jobs/s (executor off)", f"{results.admitted:.0f}", "", ""),
            (
                "queued HTTP jobs/s drained (server clock)",
                f"{drained:.0f}",
                "1000s*",
                verdict(drained >= QUEUED_RATE_TARGET),
            ),
            (
                "ratio: drained jobs/s / raw req/s",
                f"{drained / raw:.4f}",
                ">= 0.5",
                _ratio(drained, raw),
            ),
        ]
    return rows


def _ratio(rate: float, raw: float) -> str:
    return verdict(rate / raw >= RAW_RATIO_TARGET)


def table(rows: list[Row]) -> str:
    header: Row = ("metric", "value", "target", "")
    everything = [header, *rows]
    widths = [max(len(row[i]) for row in everything) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(row: Row) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def print_report(args: argparse.Namespace, results: Results) -> None:
    print(
        f"\nAccord HTTP jobs: N={args.jobs}, CreateJob clients={args.clients}, "
        f"executor concurrency={args.concurrency}, service log level={args.log_level}\n"
    )
    print(table(create_rows(results) + throughput_rows(results, args.concurrency)))
    if results.queued is not None:
        print("* the DESIGN target is for no-op jobs; these jobs each fetch a page")
    print(f"\nCreateJob phase: states {results.create_drain.tally.states}")
    print(f"  CPU (share of one core): {results.create_drain.cpu}")
    if results.create_errors:
        print(f"  CreateJob errors: {results.create_errors}")
    if results.queued is not None:
        print(f"queued phase: states {results.queued.tally.states}")
        print(f"  CPU (share of one core): {results.queued.cpu}")
    raw = results.raw
    print(f"raw loop: {raw['requests']:.0f} requests, {raw['failures']:.0f} not 200")
