"""Engine pools: capacity, jobs in flight and finished, for polling and for status."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias

from accord.common.v1 import job_spec_pb2
from accord.executor.v1 import executor_service_pb2 as pb

Engine: TypeAlias = job_spec_pb2.Engine.ValueType


@dataclass
class Pool:
    engine: Engine
    capacity: int
    available: bool
    unavailable_reason: str = ""
    in_flight: int = 0
    completed_total: int = 0

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.in_flight) if self.available else 0


class Pools:
    def __init__(self, worker_id: str, pools: Iterable[Pool]) -> None:
        self.worker_id = worker_id
        self.draining = False
        self._pools = {p.engine: p for p in pools}
        self._freed = asyncio.Event()
        # Leased tasks waiting here for a slot: the local buffer that keeps slots busy.
        self.buffered = 0

    def get(self, engine: Engine) -> Pool | None:
        return self._pools.get(engine)

    def runnable(self) -> list[Engine]:
        return [e for e, p in self._pools.items() if p.available]

    def free(self, engines: Iterable[Engine]) -> int:
        return sum(self._pools[e].free for e in engines)

    def acquire(self, engine: Engine) -> None:
        """Count a job in; synchronous, so the next poll already sees the slot taken."""
        self._pools[engine].in_flight += 1

    def release(self, engine: Engine) -> None:
        pool = self._pools[engine]
        pool.in_flight -= 1
        pool.completed_total += 1
        self._freed.set()

    @contextmanager
    def slot(self, engine: Engine) -> Iterator[None]:
        self.acquire(engine)
        try:
            yield
        finally:
            self.release(engine)

    async def wait_room(self, engines: list[Engine], buffer: int) -> int:
        """Wait until the given pools, with a local buffer of `buffer` leased tasks waiting
        for a slot, have room for more; returns how many more tasks fit."""
        while (room := self.free(engines) + buffer - self.buffered) <= 0:
            self._freed.clear()
            await self._freed.wait()
        return room

    async def take(self, engine: Engine) -> bool:
        """Wait for a free slot in the engine's pool, then count the job in. False when the
        executor started draining first: the job must not start."""
        while self._pools[engine].free <= 0 and not self.draining:
            self._freed.clear()
            await self._freed.wait()
        if self.draining:
            return False
        self.acquire(engine)
        return True

    def drain(self) -> None:
        """Start no more jobs; wake the buffered ones so they can give their leases back."""
        self.draining = True
        self._freed.set()

    def status(self) -> pb.GetExecutorStatusResponse:
        return pb.GetExecutorStatusResponse(
            worker_id=self.worker_id,
            draining=self.draining,
            pools=[
                pb.EnginePool(
                    engine=p.engine,
                    available=p.available,
                    unavailable_reason=p.unavailable_reason,
                    capacity=p.capacity,
                    in_flight=p.in_flight,
                    completed_total=p.completed_total,
                )
                for p in self._pools.values()
            ],
        )
