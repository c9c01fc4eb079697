"""Wires the policy service: database, NATS, outbox relay, gRPC server; start and stop."""

from __future__ import annotations

from pathlib import Path

from accord.policy.v1 import policy_service_pb2_grpc
from accord_kit import db, events
from accord_kit import nats as knats
from accord_kit.backing import Backing
from accord_kit.outbox import Relay
from accord_kit.server import Server
from accord_policy import tables
from accord_policy.api import PolicyApi
from accord_policy.config import Settings
from accord_policy.service import PRODUCER, PolicyUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "accord.policy.v1.PolicyService"


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
        self._backing = b = await Backing.open(s.database_url, s.nats_url, "accord-policy")
        await knats.ensure_stream(
            b.nc, events.stream_name(PRODUCER), events.stream_subjects(PRODUCER)
        )
        cases = PolicyUseCases(db.sessionmaker(b.engine), default_deny=s.default_deny)
        self.server.add(
            SERVICE, policy_service_pb2_grpc.add_PolicyServiceServicer_to_server, PolicyApi(cases)
        )
        self._backing.report_health(self.server)
        self._relay = Relay(b.engine, tables.outbox, b.nc)
        self._relay.start()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        await self._relay.stop()
        await self._backing.close()
