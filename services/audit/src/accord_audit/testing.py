"""Test helpers for the audit service: settings for a test and a publishing harness.

Kept in the package (like accord_kit.testing) so tests import them with their types.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import grpc
from nats.aio.client import Client

from accord.audit.v1 import audit_service_pb2 as pb
from accord.audit.v1 import audit_service_pb2_grpc, record_pb2
from accord.audit.v2 import audit_service_pb2 as pb2
from accord.audit.v2 import audit_service_pb2_grpc as audit_v2_grpc
from accord.audit.v2 import record_pb2 as record_v2
from accord.events.v1 import envelope_pb2, job_events_pb2
from accord_audit.app import App
from accord_audit.config import Settings
from accord_kit import events
from accord_kit.testing import as_tenant, eventually

__all__ = ["Harness", "eventually", "settings_for"]


def settings_for(database_url: str, nats_url: str, producer: str, durable: str) -> Settings:
    return Settings(
        database_url=database_url,
        nats_url=nats_url,
        port=0,
        metrics_port=0,
        producers=[producer],
        durable_name=durable,
        fetch_timeout=0.2,
        retry_initial=0.05,
        stream_poll_interval=0.05,
        checkpoint_interval=0.5,
        # A proof test asks for some 400 proofs back to back as one tenant: more than the
        # default per-caller limit lets through once the machine is fast enough.
        rate_limit=2000.0,
        rate_limit_burst=2000.0,
    )


@dataclass
class Harness:
    """The server under test, its stub, and a publisher on the test's own stream."""

    app: App
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub
    nc: Client
    producer: str
    database_url: str
    # The same server's accord.audit.v2 service: per-tenant logs.
    v2: audit_v2_grpc.AuditServiceAsyncStub

    @classmethod
    def over(
        cls, app: App, ch: grpc.aio.Channel, nc: Client, producer: str, database_url: str
    ) -> Harness:
        """A harness calling `app` through both API versions on channel `ch`."""
        v1 = audit_service_pb2_grpc.AuditServiceStub(ch)
        return cls(app, v1, nc, producer, database_url, audit_v2_grpc.AuditServiceStub(ch))

    def event(
        self,
        tenant: str = "acme",
        aggregate: str = "job",
        name: str = "queued",
        aggregate_id: str = "",
        event_time: datetime | None = None,
    ) -> envelope_pb2.EventEnvelope:
        job_id = aggregate_id or str(uuid.uuid4())
        return events.envelope(
            producer=self.producer,
            aggregate=aggregate,
            event=name,
            aggregate_id=job_id,
            tenant_id=tenant,
            payload=job_events_pb2.JobStateChanged(job_id=job_id),
            event_time=event_time,
        )

    async def publish(self, *envelopes: envelope_pb2.EventEnvelope, msg_id: str = "") -> None:
        js = self.nc.jetstream()
        for e in envelopes:
            headers = {"Nats-Msg-Id": msg_id or e.event_id}
            await js.publish(e.event_type, e.SerializeToString(), headers=headers)

    async def publish_raw(self, data: bytes) -> None:
        subject = events.subject(self.producer, "job", "garbled")
        await self.nc.jetstream().publish(subject, data)

    async def listed(self, tenant: str = "acme", **filters: object) -> list[record_pb2.AuditRecord]:
        response = await self.stub.ListRecords(
            pb.ListRecordsRequest(page_size=1000, **filters),  # type: ignore[arg-type]
            metadata=as_tenant(tenant),
        )
        return list(response.records)

    async def wait_for(
        self, *envelopes: envelope_pb2.EventEnvelope, tenant: str = "acme"
    ) -> list[record_pb2.AuditRecord]:
        """The tenant's records once every given event is among them."""
        wanted = {e.event_id for e in envelopes}

        async def probe() -> list[record_pb2.AuditRecord] | None:
            records = await self.listed(tenant)
            return records if wanted <= {r.event_id for r in records} else None

        return await eventually(probe, what=f"{len(wanted)} events in the log")

    async def log(self, tenant: str = "acme") -> list[record_v2.AuditRecord]:
        """The tenant's whole log, through accord.audit.v2."""
        out: list[record_v2.AuditRecord] = []
        token = ""
        while True:
            page = await self.v2.ListRecords(
                pb2.ListRecordsRequest(page_size=1000, page_token=token),
                metadata=as_tenant(tenant),
            )
            out += page.records
            token = page.next_page_token
            if not token:
                return out
