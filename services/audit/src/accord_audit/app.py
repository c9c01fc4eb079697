"""Wires the audit service: database, NATS, the event consumer, gRPC server; start and stop."""

from __future__ import annotations

from pathlib import Path

from accord.audit.v1 import audit_service_pb2_grpc
from accord_audit import tables
from accord_audit.api import AuditApi
from accord_audit.config import Settings
from accord_audit.consumer import Consumer
from accord_audit.service import AuditUseCases
from accord_kit import db
from accord_kit.backing import Backing
from accord_kit.server import Server

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "accord.audit.v1.AuditService"


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
        api = AuditApi(self._cases)
        self.server.add(SERVICE, audit_service_pb2_grpc.add_AuditServiceServicer_to_server, api)
        await self._backing.serve_with(self.server)
        # Streams are ensured inside the consumer's retry loop, so a JetStream hiccup at
        # boot delays consumption instead of failing the start.
        self._consumer = Consumer(b.nc, self._cases, s)
        self._consumer.start()
        await self.server.start()

    async def stop(self) -> None:
        self._cases.close()
        await self.server.stop()
        await self._consumer.stop()
        await self._backing.close()
