"""Wires the orchestrator: database, NATS, policy client, queue reaper, relay, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from accord.orchestrator.v1 import (
    job_service_pb2_grpc,
    schedule_service_pb2_grpc,
    worker_service_pb2_grpc,
    workflow_service_pb2_grpc,
)
from accord_kit import db, events
from accord_kit import nats as knats
from accord_kit.backing import Backing
from accord_kit.outbox import Relay
from accord_kit.policy import PolicyClient
from accord_kit.server import Server
from accord_orchestrator import tables, telemetry
from accord_orchestrator.api import JobApi, WorkerApi
from accord_orchestrator.config import Settings
from accord_orchestrator.firing import Firer
from accord_orchestrator.history import PRODUCER
from accord_orchestrator.queue import QueueUseCases, watch_stranded
from accord_orchestrator.schedule_api import ScheduleApi
from accord_orchestrator.schedule_service import ScheduleUseCases
from accord_orchestrator.secrets import SecretBox
from accord_orchestrator.service import JobUseCases
from accord_orchestrator.webhooks import Deliverer, DeliveryPolicy, Sender
from accord_orchestrator.workflow_api import WorkflowApi
from accord_orchestrator.workflow_judge import Judge
from accord_orchestrator.workflow_service import WorkflowUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
JOB_SERVICE = "accord.orchestrator.v1.JobService"
WORKER_SERVICE = "accord.orchestrator.v1.WorkerService"
SCHEDULE_SERVICE = "accord.orchestrator.v1.ScheduleService"
WORKFLOW_SERVICE = "accord.orchestrator.v1.WorkflowService"


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
        key = s.webhook_key.get_secret_value() if s.webhook_key is not None else ""
        box = SecretBox.from_setting(key) if key else None
        self._sender = Sender(self._policy, s.webhook_timeout)
        self.deliverer = Deliverer(
            b.engine,
            self._sender,
            box,
            DeliveryPolicy(
                max_attempts=s.webhook_max_attempts,
                initial_backoff=s.webhook_initial_backoff,
                max_backoff=s.webhook_max_backoff,
                timeout=s.webhook_timeout,
            ),
        )
        self.workflows = WorkflowUseCases(b.engine, self.schedules, box, self.deliverer)
        self.judge = Judge(
            b.engine,
            jobs,
            self.deliverer,
            idle=s.workflow_interval,
            lookback=s.workflow_lookback,
        )
        self.server.add(
            WORKFLOW_SERVICE,
            workflow_service_pb2_grpc.add_WorkflowServiceServicer_to_server,
            WorkflowApi(self.workflows),
        )
        await self._backing.serve_with(self.server)
        self._relay = Relay(b.engine, tables.outbox, b.nc)
        self._relay.start()
        if s.fire_schedules:
            self.firer.start()
        if s.run_workflows:
            self.judge.start()
            self.deliverer.start()
        self._housekeeping = [
            asyncio.create_task(self.queue.run_every(s.reaper_interval, self.queue.reap)),
            asyncio.create_task(self.queue.run_every(s.metrics_interval, self._count_depth)),
        ]
        self._housekeeping.append(
            asyncio.create_task(self.queue.run_every(s.prune_interval, self.prune))
        )
        await self.server.start()

    async def prune(self) -> int:
        """Delete the finished jobs past their tenant's retention (its policies', else ours).
        Without the policy service's answer the pass fails and nothing is deleted: a tenant
        may keep jobs longer than our default."""
        kept = await self._policy.retentions()
        s = self.settings
        return await self.queue.prune(s.retention or None, s.prune_batch, kept)

    async def _count_depth(self) -> int:
        return await telemetry.count_depth(self._backing.engine)

    def _wake_firer(self) -> None:
        self.firer.wake()

    async def stop(self) -> None:
        await self.server.stop()
        await self.firer.stop()
        await self.judge.stop()
        await self.deliverer.stop()
        await self._sender.close()
        for task in self._housekeeping:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._relay.stop()
        await self._policy.close()
        await self._backing.close()
