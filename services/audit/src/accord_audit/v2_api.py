"""accord.audit.v2 AuditService servicer: every call answers for the caller's tenant log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from accord.audit.v2 import audit_service_pb2 as pb
from accord.audit.v2 import audit_service_pb2_grpc, record_pb2
from accord.events.v1 import envelope_pb2
from accord_audit.domain.checkpoints import Checkpoint
from accord_audit.domain.records import Record
from accord_audit.logs import TenantLogs
from accord_audit.service import AuditUseCases
from accord_kit import caller

Ctx = grpc.aio.ServicerContext[Any, Any]


class AuditApiV2(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, cases: AuditUseCases, logs: TenantLogs) -> None:
        self._cases = cases
        self._logs = logs

    async def ListRecords(
        self, request: pb.ListRecordsRequest, context: Ctx
    ) -> pb.ListRecordsResponse:
        found, token = await self._cases.list_records(caller.tenant(), request, tenant_log=True)
        return pb.ListRecordsResponse(records=[to_proto(r) for r in found], next_page_token=token)

    async def GetRecord(self, request: pb.GetRecordRequest, context: Ctx) -> pb.GetRecordResponse:
        key = request.index if request.WhichOneof("key") == "index" else request.event_id
        record = await self._cases.get(caller.tenant(), key, tenant_log=True)
        return pb.GetRecordResponse(record=to_proto(record))

    async def StreamRecords(
        self, request: pb.StreamRecordsRequest, context: Ctx
    ) -> AsyncIterator[pb.StreamRecordsResponse]:
        records = self._cases.stream(
            caller.tenant(), request.from_index, request.event_type_prefix, tenant_log=True
        )
        async for record in records:
            yield pb.StreamRecordsResponse(record=to_proto(record))

    async def GetCheckpoint(
        self, request: pb.GetCheckpointRequest, context: Ctx
    ) -> pb.GetCheckpointResponse:
        found = await self._logs.checkpoint(caller.tenant(), request.tree_size)
        return pb.GetCheckpointResponse(checkpoint=checkpoint_proto(found))

    async def GetCheckpointKeys(
        self, request: pb.GetCheckpointKeysRequest, context: Ctx
    ) -> pb.GetCheckpointKeysResponse:
        keys = []
        for key_id, public, first_use in await self._logs.keys():
            key = record_pb2.CheckpointKey(key_id=key_id, public_key=public)
            key.first_use_time.FromDatetime(first_use)
            keys.append(key)
        return pb.GetCheckpointKeysResponse(keys=keys)

    async def GetInclusionProof(
        self, request: pb.GetInclusionProofRequest, context: Ctx
    ) -> pb.GetInclusionProofResponse:
        key = request.index if request.WhichOneof("key") == "index" else request.event_id
        found = await self._logs.inclusion(caller.tenant(), key, request.tree_size)
        response = pb.GetInclusionProofResponse(
            index=found.index, tree_size=found.tree_size, leaf=found.leaf, hashes=found.hashes
        )
        if found.checkpoint is not None:
            response.checkpoint.CopyFrom(checkpoint_proto(found.checkpoint))
        return response

    async def GetConsistencyProof(
        self, request: pb.GetConsistencyProofRequest, context: Ctx
    ) -> pb.GetConsistencyProofResponse:
        tenant = caller.tenant()
        to_size, hashes = await self._logs.consistency(tenant, request.from_size, request.to_size)
        return pb.GetConsistencyProofResponse(
            from_size=request.from_size, to_size=to_size, hashes=hashes
        )

    async def VerifyRange(
        self, request: pb.VerifyRangeRequest, context: Ctx
    ) -> pb.VerifyRangeResponse:
        check = await self._logs.verify(caller.tenant(), request.start_index, request.end_index)
        return pb.VerifyRangeResponse(
            valid=check.first_invalid is None,
            first_invalid_index=-1 if check.first_invalid is None else check.first_invalid,
            checked_count=check.checked,
            failure=check.failure,
            erased_count=check.erased_count,
            erased_indexes=check.erased,
        )

    async def ExportRecords(
        self, request: pb.ExportRecordsRequest, context: Ctx
    ) -> AsyncIterator[pb.ExportRecordsResponse]:
        cp, proof, records = await self._logs.export(
            caller.tenant(), request.start_index, request.end_index, request.consistency_from_size
        )
        yield pb.ExportRecordsResponse(checkpoint=checkpoint_proto(cp))
        if proof is not None:
            consistency = pb.GetConsistencyProofResponse(
                from_size=request.consistency_from_size, to_size=cp.tree_size, hashes=proof
            )
            yield pb.ExportRecordsResponse(consistency=consistency)
        async for item in records:
            exported = pb.ExportedRecord(record=to_proto(item.record), inclusion_proof=item.proof)
            yield pb.ExportRecordsResponse(record=exported)


def checkpoint_proto(cp: Checkpoint) -> record_pb2.Checkpoint:
    out = record_pb2.Checkpoint(
        log_id=cp.log_id,
        tree_size=cp.tree_size,
        root_hash=cp.root_hash,
        note=cp.note,
        signature=cp.signature,
        key_id=cp.key_id,
    )
    out.checkpoint_time.FromDatetime(cp.time)
    return out


def to_proto(r: Record) -> record_pb2.AuditRecord:
    e, link = r.event, r.link
    record = record_pb2.AuditRecord(
        index=link.index,
        event_id=e.event_id,
        event_type=e.event_type,
        tenant_id=e.tenant_id,
        aggregate_type=e.aggregate_type,
        aggregate_id=e.aggregate_id,
        envelope=e.envelope,
        payload_digest=link.payload_digest,
        hash=link.hash,
        prev_hash=link.prev_hash,
        actor=envelope_pb2.EventEnvelope.FromString(e.envelope).actor,
    )
    record.event_time.FromDatetime(e.event_time)
    record.append_time.FromDatetime(r.append_time)
    if r.erase_time is not None:
        record.erase_time.FromDatetime(r.erase_time)
    return record
