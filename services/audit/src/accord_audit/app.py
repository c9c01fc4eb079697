"""Wires the audit service: database, NATS, the event consumer, gRPC server; start and stop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from accord.audit.v1 import audit_service_pb2_grpc
from accord.audit.v2 import audit_service_pb2_grpc as audit_v2_grpc
from accord_audit import tables
from accord_audit.api import AuditApi
from accord_audit.config import Settings
from accord_audit.consumer import Consumer
from accord_audit.logs import TenantLogs
from accord_audit.service import AuditUseCases
from accord_audit.signer import Signer
from accord_audit.v2_api import AuditApiV2
from accord_kit import db
from accord_kit.backing import CLOSE_SECONDS, Backing
from accord_kit.server import Server

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "accord.audit.v1.AuditService"
SERVICE_V2 = "accord.audit.v2.AuditService"
log = structlog.get_logger("accord.audit")


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
        self._backing = b = await Backing.open(s.database_url, s.nats_url, "accord-audit")
        self._cases = AuditUseCases(
            db.sessionmaker(b.engine), stream_poll_interval=s.stream_poll_interval
        )
        self._reads = await db.read_pool(s.database_url)
        self.logs = TenantLogs(
            db.sessionmaker(b.engine), self._reads, Signer(s.checkpoint_key_file), s.log_origin
        )
        api = AuditApi(self._cases)
        self.server.add(SERVICE, audit_service_pb2_grpc.add_AuditServiceServicer_to_server, api)
        api2 = AuditApiV2(self._cases, self.logs)
        self.server.add(SERVICE_V2, audit_v2_grpc.add_AuditServiceServicer_to_server, api2)
        await self._backing.serve_with(self.server)
        # Streams are ensured inside the consumer's retry loop, so a JetStream hiccup at
        # boot delays consumption instead of failing the start.
        self._consumer = Consumer(b.nc, self._cases, s)
        self._consumer.start()
        self._chores = [
            asyncio.create_task(_every(s.checkpoint_interval, self.logs.sign_all, "checkpoint")),
            asyncio.create_task(
                _every(
                    s.retention_interval,
                    lambda: self.logs.erase_expired(s.retention_days),
                    "retention",
                )
            ),
        ]
        await self.server.start()

    async def stop(self) -> None:
        for chore in self._chores:
            chore.cancel()
        for chore in self._chores:
            with contextlib.suppress(asyncio.CancelledError):
                await chore
        self._cases.close()
        await self.server.stop()
        await self._consumer.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reads.close(), CLOSE_SECONDS)
        await self._backing.close()


async def _every(seconds: float, work: Callable[[], Awaitable[int]], name: str) -> None:
    """Run `work` every `seconds` until cancelled; a failed pass is logged and retried."""
    while True:
        try:
            await work()
        except Exception as exc:
            log.warning(f"audit.{name}_failed", error=repr(exc))
        await asyncio.sleep(seconds)
