"""Wires the orchestrator: database, NATS, policy client, queue reaper, relay, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from accord.orchestrator.v1 import (
    job_service_pb2_grpc,
    schedule_service_pb2_grpc,
    worker_service_pb2_grpc,
)
from accord_kit import db, events
from accord_kit import nats as knats
from accord_kit.backing import Backing
from accord_kit.outbox import Relay
from accord_kit.policy import PolicyClient
from accord_kit.server import Server
from accord_orchestrator import tables
from accord_orchestrator.api import JobApi, WorkerApi
from accord_orchestrator.config import Settings
from accord_orchestrator.firing import Firer
from accord_orchestrator.history import PRODUCER
from accord_orchestrator.queue import QueueUseCases, watch_stranded
from accord_orchestrator.schedule_api import ScheduleApi
from accord_orchestrator.schedule_service import ScheduleUseCases
from accord_orchestrator.service import JobUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
JOB_SERVICE = "accord.orchestrator.v1.JobService"
WORKER_SERVICE = "accord.orchestrator.v1.WorkerService"
SCHEDULE_SERVICE = "accord.orchestrator.v1.ScheduleService"


def migrate(settings: Settings) -> None:
    db.migrate(settings.database_url, MIGRATIONS, tables.SCHEMA)


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = Server(settings)

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        s = self.settings
        self._backing = b = await Backing.open(
            s.database_url, s.nats_url, "accord-orchestrator", pool_size=20
        )
        await knats.ensure_stream(
            b.nc, events.stream_name(PRODUCER), events.stream_subjects(PRODUCER)
        )
        self._policy = PolicyClient(s.policy_target, s.policy_timeout, s)
        self.queue = QueueUseCases(b.engine, s.poll_interval)
        self.jobs = jobs = JobUseCases(
            b.engine, self._policy, self.queue.notify, pollers=self.queue.pollers
        )
        watch_stranded(self.queue.pollers)
        self.server.add(
            JOB_SERVICE, job_service_pb2_grpc.add_JobServiceServicer_to_server, JobApi(jobs)
        )
        self.server.add(
            WORKER_SERVICE,
            worker_service_pb2_grpc.add_WorkerServiceServicer_to_server,
            WorkerApi(self.queue),
        )
        self.schedules = ScheduleUseCases(b.engine, jobs, on_change=self._wake_firer)
        self.firer = Firer(
            self.schedules, idle=s.schedule_idle_interval, parallel=s.schedule_passes
        )
        self.server.add(
            SCHEDULE_SERVICE,
            schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server,
            ScheduleApi(self.schedules),
        )
        await self._backing.serve_with(self.server)
        self._relay = Relay(b.engine, tables.outbox, b.nc)
        self._relay.start()
        if s.fire_schedules:
            self.firer.start()
        self._housekeeping = [
            asyncio.create_task(self.queue.run_every(s.reaper_interval, self.queue.reap)),
        ]
        if s.retention:

            async def prune() -> int:
                return await self.queue.prune(s.retention, s.prune_batch)

            self._housekeeping.append(
                asyncio.create_task(self.queue.run_every(s.prune_interval, prune))
            )
        await self.server.start()

    def _wake_firer(self) -> None:
        self.firer.wake()

    async def stop(self) -> None:
        await self.server.stop()
        await self.firer.stop()
        for task in self._housekeeping:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._relay.stop()
        await self._policy.close()
        await self._backing.close()
