"""The firing loop: sleeps until the next schedule is due (woken at once when a schedule
changes, here or in another replica, through NOTIFY), fires every due schedule it can claim,
and sleeps again. Replicas share the work through SKIP LOCKED; a fire's job request id makes
a fire fired twice one job."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from accord_kit import notify
from accord_orchestrator.schedule_service import CHANNEL, ScheduleUseCases

log = structlog.get_logger("accord.schedules")


class Firer:
    def __init__(
        self,
        cases: ScheduleUseCases,
        *,
        idle: float = 1.0,
        batch: int = 500,
        contended: float = 0.02,
        retry: float = 1.0,
    ) -> None:
        """`idle`: the longest sleep, should a NOTIFY from another replica be lost;
        `contended`: the pause when what is due is held by another replica; `retry`: the
        pause after a failed pass (e.g. policy unavailable; nothing was advanced)."""
        self._cases = cases
        self._idle = idle
        self._batch = batch
        self._contended = contended
        self._retry = retry
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.passes = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run()),
            asyncio.create_task(
                notify.listen(self._cases.engine, CHANNEL, self.wake, max_backoff=self._idle)
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _run(self) -> None:
        while True:
            try:
                delay = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed pass is retried; the loop must not die
                log.warning("schedules.pass_failed", error=str(exc), error_type=type(exc).__name__)
                delay = self._retry
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    async def _step(self) -> float:
        """Fire what is due; return how long to sleep before looking again."""
        self.passes += 1
        started = time.perf_counter()
        claimed = await self._cases.fire_due(self._batch)
        if claimed:
            log.debug("schedules.pass", claimed=claimed, ms=(time.perf_counter() - started) * 1e3)
        if claimed >= self._batch:
            return 0.0
        due = await self._cases.next_due()
        if due is None:
            return self._idle
        wait = (due - self._cases.clock()).total_seconds()
        if wait <= 0:  # due meanwhile, or held by another replica: then let it finish
            return 0.0 if claimed else self._contended
        return min(wait, self._idle)
