"""AuditService servicer: map each request to one use case and back.

Checkpoints, proofs and export are per tenant log, in accord.audit.v2 (v2_api.py); here they
answer UNIMPLEMENTED and say so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from accord.audit.v1 import audit_service_pb2 as pb
from accord.audit.v1 import audit_service_pb2_grpc, record_pb2
from accord.events.v1 import envelope_pb2
from accord_audit.domain.records import Record
from accord_audit.service import AuditUseCases
from accord_kit import caller
from accord_kit.errors import Unimplemented

Ctx = grpc.aio.ServicerContext[Any, Any]
MERKLE = "checkpoints, proofs and export are per tenant log: call accord.audit.v2.AuditService"


class AuditApi(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, cases: AuditUseCases) -> None:
        self._cases = cases

    async def ListRecords(
        self, request: pb.ListRecordsRequest, context: Ctx
    ) -> pb.ListRecordsResponse:
        found, token = await self._cases.list_records(caller.tenant(), request)
        return pb.ListRecordsResponse(records=[to_proto(r) for r in found], next_page_token=token)

    async def GetRecord(self, request: pb.GetRecordRequest, context: Ctx) -> pb.GetRecordResponse:
        key = request.index if request.WhichOneof("key") == "index" else request.event_id
        record = await self._cases.get(caller.tenant(), key)
        return pb.GetRecordResponse(record=to_proto(record))

    async def StreamRecords(
        self, request: pb.StreamRecordsRequest, context: Ctx
    ) -> AsyncIterator[pb.StreamRecordsResponse]:
        records = self._cases.stream(caller.tenant(), request.from_index, request.event_type_prefix)
        async for record in records:
            yield pb.StreamRecordsResponse(record=to_proto(record))

    async def VerifyRange(
        self, request: pb.VerifyRangeRequest, context: Ctx
    ) -> pb.VerifyRangeResponse:
        # The chain runs through every tenant's records: an operator's (service) token only.
        caller.require_service()
        result = await self._cases.verify(request.start_index, request.end_index)
        return pb.VerifyRangeResponse(
            valid=result.valid,
            first_invalid_index=-1 if result.first_invalid is None else result.first_invalid,
            checked_count=result.checked,
        )

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Ctx
    ) -> pb.GetCheckpointResponse:
        raise Unimplemented(MERKLE)

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: Ctx
    ) -> pb.GetInclusionProofResponse:
        raise Unimplemented(MERKLE)

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: Ctx
    ) -> pb.GetConsistencyProofResponse:
        raise Unimplemented(MERKLE)

    async def ExportRecords(
        self, request: pb.ExportRecordsRequest, context: Ctx
    ) -> AsyncIterator[pb.ExportRecordsResponse]:
        raise Unimplemented(MERKLE)
        yield  # unreachable: makes this an async generator, as the stream boundary expects


def to_proto(r: Record) -> record_pb2.AuditRecord:
    e = r.event
    record = record_pb2.AuditRecord(
        index=r.index,
        event_id=e.event_id,
        event_type=e.event_type,
        tenant_id=e.tenant_id,
        aggregate_type=e.aggregate_type,
        aggregate_id=e.aggregate_id,
        envelope=e.envelope,
        hash=r.hash,
        prev_hash=r.prev_hash,
        actor=envelope_pb2.EventEnvelope.FromString(e.envelope).actor,
    )
    record.event_time.FromDatetime(e.event_time)
    record.append_time.FromDatetime(r.append_time)
    return record
