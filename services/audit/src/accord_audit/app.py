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
from accord_kit import nats as knats
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
        self._engine = db.create_engine(self.settings.database_url)
        self._nc = await knats.connect(self.settings.nats_url, "accord-audit")
        self._cases = AuditUseCases(
            db.sessionmaker(self._engine), stream_poll_interval=self.settings.stream_poll_interval
        )
        api = AuditApi(self._cases)
        self.server.add(SERVICE, audit_service_pb2_grpc.add_AuditServiceServicer_to_server, api)
        self.server.check("postgres", db.database_check(self._engine))
        self.server.check("nats", knats.nats_check(self._nc))
        # Streams are ensured inside the consumer's retry loop, so a JetStream hiccup at
        # boot delays consumption instead of failing the start.
        self._consumer = Consumer(self._nc, self._cases, self.settings)
        self._consumer.start()
        await self.server.start()

    async def stop(self) -> None:
        self._cases.close()
        await self.server.stop()
        await self._consumer.stop()
        await self._nc.close()
        await self._engine.dispose()
