"""Wires the policy service: database, NATS, outbox relay, gRPC server; start and stop."""

from __future__ import annotations

from pathlib import Path

from accord.policy.v1 import policy_service_pb2_grpc, token_service_pb2_grpc
from accord_kit import db, events
from accord_kit import nats as knats
from accord_kit.backing import Backing
from accord_kit.outbox import Relay
from accord_kit.server import Server
from accord_policy import tables
from accord_policy.api import PolicyApi, TokenApi
from accord_policy.config import Settings
from accord_policy.requests import RequestUseCases
from accord_policy.resolver import Resolve, system_resolve
from accord_policy.robots import Robots
from accord_policy.service import PRODUCER, PolicyUseCases
from accord_policy.tokens import TokenUseCases

MIGRATIONS = Path(__file__).parent / "migrations"
SERVICE = "accord.policy.v1.PolicyService"
TOKEN_SERVICE = "accord.policy.v1.TokenService"  # noqa: S105 - a service name


def migrate(settings: Settings) -> None:
    db.migrate(settings.database_url, MIGRATIONS, tables.SCHEMA)


class App:
    def __init__(self, settings: Settings, resolve: Resolve = system_resolve) -> None:
        self.settings = settings
        self.server = Server(settings)
        self._resolve = resolve

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        s = self.settings
        self._backing = b = await Backing.open(s.database_url, s.nats_url, "accord-policy")
        await knats.ensure_stream(
            b.nc, events.stream_name(PRODUCER), events.stream_subjects(PRODUCER)
        )
        sessions = db.sessionmaker(b.engine)
        cases = PolicyUseCases(sessions, default_deny=s.default_deny)
        self._robots = Robots(
            sessions,
            self._resolve,
            user_agent=s.robots_user_agent,
            timeout=s.robots_timeout,
            error_ttl=s.robots_error_ttl,
        )
        await self._robots.start()
        requests = RequestUseCases(
            b.engine,
            sessions,
            self._resolve,
            self._robots,
            default_deny=s.default_deny,
            robots_agent=s.robots_agent,
        )
        self.server.add(
            SERVICE,
            policy_service_pb2_grpc.add_PolicyServiceServicer_to_server,
            PolicyApi(cases, requests),
        )
        self.server.add(
            TOKEN_SERVICE,
            token_service_pb2_grpc.add_TokenServiceServicer_to_server,
            TokenApi(TokenUseCases(sessions, b.nc)),
        )
        await self._backing.serve_with(self.server)
        self._relay = Relay(b.engine, tables.outbox, b.nc)
        self._relay.start()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
        await self._relay.stop()
        await self._robots.close()
        await self._backing.close()
