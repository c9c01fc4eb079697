"""The firing loop: sleeps until the next schedule is due (woken at once when a schedule
changes, here or in another replica, through NOTIFY), fires what is due, and sleeps again.

A pass claims due schedules with SKIP LOCKED and fires them in one transaction. Up to
`parallel` passes run at once, so a slow pass (a slow policy call, a busy database) does not
hold up schedules that fall due meanwhile: the loop starts the next pass when the next
schedule that no pass holds is due. Replicas share the work the same way; a fire's job
request id makes a fire fired twice one job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog

from accord_kit import notify
from accord_orchestrator.schedule_service import ScheduleUseCases
from accord_orchestrator.schedule_views import CHANNEL

log = structlog.get_logger("accord.schedules")


class Firer:
    def __init__(
        self,
        cases: ScheduleUseCases,
        *,
        idle: float = 5.0,
        batch: int = 500,
        parallel: int = 4,
        contended: float = 0.02,
        retry: float = 1.0,
    ) -> None:
        """`idle`: the longest sleep, should a NOTIFY from another replica be lost;
        `contended`: the pause when what is due is held by another replica; `retry`: the
        pause after a failed pass (e.g. policy unavailable; nothing was advanced)."""
        self._cases = cases
        self._idle = idle
        self._batch = batch
        self._parallel = parallel
        self._contended = contended
        self._retry = retry
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # Passes in flight and the schedule ids each holds.
        self._held: dict[asyncio.Task[int], list[str]] = {}
        self.passes = 0  # passes started
        self.looks = 0  # times the loop looked for what is due

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
        for task in [*self._tasks, *self._held]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._held = {}

    async def _run(self) -> None:
        while True:
            try:
                delay = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed look is retried; the loop must not die
                log.warning("schedules.loop_failed", error=str(exc), error_type=type(exc).__name__)
                delay = self._retry
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    async def _step(self) -> float:
        """Start a pass if something is due and a pass may start; return how long to sleep
        before looking again."""
        self.looks += 1
        due = await self._cases.next_due([i for held in self._held.values() for i in held])
        if due is None:
            return self._idle
        wait = (due - self._cases.clock()).total_seconds()
        if wait > 0:
            return min(wait, self._idle)
        if len(self._held) >= self._parallel:
            return self._idle  # a pass ending wakes the loop
        if await self._start_pass() == 0:
            return self._contended  # due, but another replica holds it: let it finish
        return 0.0  # more may be due: look again at once

    async def _start_pass(self) -> int:
        """Start a pass; return how many schedules it claimed once it holds them."""
        held: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()

        def hold(ids: list[str]) -> None:
            if not held.done():
                held.set_result(ids)

        self.passes += 1
        task = asyncio.create_task(self._pass(hold))
        self._held[task] = []
        task.add_done_callback(self._ended)
        either: set[asyncio.Future[Any]] = {held, task}
        done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if held in done:
            if not task.done():  # a pass already ended is no longer in flight (see _ended)
                self._held[task] = held.result()
            return len(held.result())
        held.cancel()
        return 0

    async def _pass(self, hold: Callable[[list[str]], None]) -> int:
        """Fire what is due; how many schedules were fired, -1 when the pass failed."""
        started = time.perf_counter()
        try:
            claimed = await self._cases.fire_due(self._batch, hold)
        except Exception as exc:  # nothing was advanced: a later pass fires them again
            log.warning("schedules.pass_failed", error=str(exc), error_type=type(exc).__name__)
            await asyncio.sleep(self._retry)  # holding its slot: failures do not spin
            return -1
        if claimed:
            log.debug("schedules.pass", claimed=claimed, ms=(time.perf_counter() - started) * 1e3)
        return claimed

    def _ended(self, task: asyncio.Task[int]) -> None:
        """A pass that fired (or failed) changed what is due: the loop looks again."""
        self._held.pop(task, None)
        if not task.cancelled() and task.result() != 0:
            self.wake()
