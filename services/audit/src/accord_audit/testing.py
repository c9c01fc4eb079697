"""Test helpers for the audit service: settings for a test and a publishing harness.

Kept in the package (like accord_kit.testing) so tests import them with their types.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client

from accord.audit.v1 import audit_service_pb2 as pb
from accord.audit.v1 import audit_service_pb2_grpc, record_pb2
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
    )


@dataclass
class Harness:
    """The server under test, its stub, and a publisher on the test's own stream."""

    app: App
    stub: audit_service_pb2_grpc.AuditServiceAsyncStub
    nc: Client
    producer: str
    database_url: str

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
