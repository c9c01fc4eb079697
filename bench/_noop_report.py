"""What noop_jobs.py measured: its result types, the printed table and the JSON form."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from _open_loop import Load
from _report import Row, table, verdict

DRAIN_RATIO_TARGET = 1.0
ADMISSION_TARGET = 10_000.0
CREATE_P99_TARGET_MS = 10.0
CREATE_TARGET_RATE = 200.0


@dataclass
class Drained:
    """One drain of N queued no-op jobs: how long it took and what it cost in CPU."""

    jobs: int
    seconds: float
    cpu_ms: dict[str, float]  # per job, by process
    note: str = ""

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Results:
    """Everything one run measured."""

    settings: dict[str, Any]
    admitted: int
    admit_seconds: float
    admit_cpu_ms: dict[str, float]
    accord: Drained
    pgqueuer: Drained
    pgq_enqueue_seconds: float
    steady: Load
    steady_cpu_ms: dict[str, float]
    steps: list[Load] = field(default_factory=list)

    @property
    def admission_rate(self) -> float:
        return self.admitted / self.admit_seconds if self.admit_seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        return self.accord.rate / self.pgqueuer.rate if self.pgqueuer.rate > 0 else 0.0

    @property
    def knee(self) -> float | None:
        """The lowest offered rate whose p99 passed the target, if a step reached one."""
        return next((s.rate for s in self.steps if s.p(99) > CREATE_P99_TARGET_MS), None)


def _ms(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


def summary_rows(r: Results) -> list[Row]:
    p99 = r.steady.p(99)
    rate = r.steady.rate
    return [
        (
            "Accord drain, no-op jobs/s (resume to last audit record)",
            f"{r.accord.rate:.0f}",
            "",
            "",
        ),
        ("pgqueuer drain, no-op jobs/s", f"{r.pgqueuer.rate:.0f}", "", ""),
        (
            "ratio: Accord / pgqueuer",
            f"{r.ratio:.3f}",
            ">= 1.0",
            verdict(r.ratio >= DRAIN_RATIO_TARGET),
        ),
        (
            "BatchCreateJobs admitted jobs/s",
            f"{r.admission_rate:.0f}",
            ">= 10000",
            verdict(r.admission_rate >= ADMISSION_TARGET),
        ),
        (
            "pgqueuer enqueue jobs/s (one batched insert, for scale)",
            f"{r.pgqueuer.jobs / r.pgq_enqueue_seconds:.0f}" if r.pgq_enqueue_seconds else "-",
            "",
            "",
        ),
        (f"CreateJob p50 (ms), open loop at {rate:.0f}/s", _ms(r.steady.p(50)), "", ""),
        (
            f"CreateJob p99 (ms), open loop at {rate:.0f}/s",
            _ms(p99),
            "<= 10",
            verdict(p99 <= CREATE_P99_TARGET_MS),
        ),
    ]


def step_rows(r: Results) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            f"{s.rate:.0f}",
            _ms(s.p(50)),
            _ms(s.p(99)),
            str(sum(s.errors.values())),
            f"{s.lag(99):.1f}",
        )
        for s in r.steps
    ]


def _rounded(cpu_ms: dict[str, float]) -> dict[str, float]:
    return {name: round(ms, 3) for name, ms in cpu_ms.items()}


def _cpu_line(cpu_ms: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in cpu_ms.items())


def print_report(r: Results) -> None:
    s = r.settings
    print(
        f"\nAccord no-op jobs: N={s['jobs']}, executor concurrency={s['concurrency']}, "
        f"pgqueuer batch_size={s['pgq_batch_size']} x {s['pgq_workers']} queue manager(s), "
        f"service log level={s['log_level']}\n"
    )
    print(table(summary_rows(r)))
    print("\nCreateJob, open loop, offered rate stepped up (latency from each call's due time):")
    header = ("calls/s", "p50 ms", "p99 ms", "failed", "send lag p99 ms")
    rows = [header, *step_rows(r)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
    knee = r.knee
    print(
        f"  p99 first passes {CREATE_P99_TARGET_MS:g} ms at: "
        + (f"{knee:.0f} calls/s" if knee else "no step reached (up to the last rate)")
    )
    print(f"  steady {r.steady.rate:.0f}/s phase: {len(r.steady.latencies)} calls, ", end="")
    print(f"failed {dict(r.steady.errors) or 0}, send lag p99 {r.steady.lag(99):.1f} ms")
    for load in (r.steady, *r.steps):
        for code, details in load.error_details.items():
            print(f"  at {load.rate:.0f}/s, first {code}: {details}")
    print("\nCPU milliseconds per job, by process:")
    print(f"  Accord drain:    {_cpu_line(r.accord.cpu_ms)}")
    print(f"  pgqueuer drain:  {_cpu_line(r.pgqueuer.cpu_ms)}")
    print(f"  admission:       {_cpu_line(r.admit_cpu_ms)}")
    print(f"  CreateJob {r.steady.rate:.0f}/s, created and run: {_cpu_line(r.steady_cpu_ms)}")
    for note in (r.accord.note, r.pgqueuer.note):
        if note:
            print(f"  {note}")


def _finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 3)


def _load(load: Load) -> dict[str, Any]:
    return {
        "offered_per_second": load.rate,
        "seconds": load.seconds,
        "calls": len(load.latencies),
        "failed": dict(load.errors),
        "first_failures": load.error_details,
        "p50_ms": _finite(load.p(50)),
        "p99_ms": _finite(load.p(99)),
        "send_lag_p99_ms": _finite(load.lag(99)),
    }


def as_json(r: Results) -> dict[str, Any]:
    """The figures as plain data (an infinite latency, from failed calls, is null)."""
    return {
        "settings": r.settings,
        "drain": {
            "accord_jobs_per_second": round(r.accord.rate, 1),
            "pgqueuer_jobs_per_second": round(r.pgqueuer.rate, 1),
            "ratio": round(r.ratio, 4),
            "accord_seconds": r.accord.seconds,
            "pgqueuer_seconds": r.pgqueuer.seconds,
            "accord_note": r.accord.note,
            "pgqueuer_note": r.pgqueuer.note,
            "accord_cpu_ms_per_job": _rounded(r.accord.cpu_ms),
            "pgqueuer_cpu_ms_per_job": _rounded(r.pgqueuer.cpu_ms),
        },
        "admission": {
            "jobs": r.admitted,
            "seconds": r.admit_seconds,
            "jobs_per_second": round(r.admission_rate, 1),
            "cpu_ms_per_job": _rounded(r.admit_cpu_ms),
            "pgqueuer_enqueue_seconds": r.pgq_enqueue_seconds,
        },
        "create_job": {
            "steady": _load(r.steady),
            "steady_cpu_ms_per_call": _rounded(r.steady_cpu_ms),
            "steps": [_load(s) for s in r.steps],
            "p99_passes_target_at_per_second": r.knee,
        },
    }
