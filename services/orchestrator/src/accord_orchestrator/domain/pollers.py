"""Which engines the executors polling this replica ask work for, and which none does.

A queued job whose engine no running executor takes would wait without a word; with this
it says so. Only what this replica saw counts, so it claims "no executor" only while some
executor polls here for other engines: a replica no executor polls knows nothing either way.
"""

from __future__ import annotations

from accord.common.v1 import job_spec_pb2


class Pollers:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._last: dict[int, float] = {}

    def polled(self, engines: list[int], now: float) -> None:
        for engine in engines:
            self._last[engine] = now

    def stranded(self, engine: int, now: float) -> bool:
        """True when executors poll here, but none for this engine, within the window."""
        recent = {e for e, at in self._last.items() if now - at <= self._window}
        return bool(recent) and engine not in recent


def waiting_message(engine: int) -> str:
    name = job_spec_pb2.Engine.Name(job_spec_pb2.Engine.ValueType(engine))
    return f"waiting: no running executor takes {name} jobs"
