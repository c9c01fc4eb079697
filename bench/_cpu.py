"""CPU time per process of a running stack, read from /proc (Linux), to see where time goes.

PostgreSQL counts its postmaster and every backend; processes that are gone are not counted.
"""

from __future__ import annotations

import os
from pathlib import Path

from _stack import Stack

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Fields of /proc/<pid>/stat after the command name: state is index 0, ppid 1,
# utime 11, stime 12, cutime 13, cstime 14.
_PPID, _UTIME, _CSTIME = 1, 11, 14


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the name may contain spaces


def _pid_seconds(pid: int) -> float | None:
    fields = _stat(pid)
    return None if fields is None else _seconds(fields)


def _seconds(fields: list[str], children: bool = False) -> float:
    """utime + stime, plus cutime + cstime (reaped children) when asked."""
    end = _CSTIME + 1 if children else _UTIME + 2
    return sum(int(x) for x in fields[_UTIME:end]) / TICKS


def _postgres_seconds(data_dir: Path) -> float | None:
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    main = _stat(postmaster)
    if main is None:
        return None
    # The postmaster's reaped children (backends that exited) are in its cutime/cstime.
    total = _seconds(main, children=True)
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None and fields[_PPID] == str(postmaster):
            total += _seconds(fields)
    return total


def _nats_seconds(data_dir: Path) -> float | None:
    for ports_file in data_dir.glob("*.ports"):
        pid = ports_file.stem.rsplit("_", 1)[-1]
        if pid.isdigit():
            return _pid_seconds(int(pid))
    return None


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """Cumulative CPU seconds (user + system) of each process that can be found now."""
    found = {name: _pid_seconds(proc.pid) for name, proc in stack.procs.items()}
    found["postgres"] = _postgres_seconds(stack.workdir / "postgres")
    found["nats-server"] = _nats_seconds(stack.workdir / "nats")
    found["bench (clients, page)"] = _pid_seconds(os.getpid())
    return {name: value for name, value in found.items() if value is not None}


def usage(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    """Each process's share of one core over `wall` seconds, busiest first."""
    shares = {n: (after[n] - before[n]) / wall for n in after if n in before and wall > 0}
    ranked = sorted(shares.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {share:.0%}" for name, share in ranked)


def per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """Each process's CPU milliseconds per job between two readings, busiest first."""
    spent = {n: (after[n] - before[n]) * 1000 / jobs for n in after if n in before and jobs}
    return dict(sorted(spent.items(), key=lambda item: -item[1]))
