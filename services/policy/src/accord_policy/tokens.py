"""Token revocation: the list lives in the shared JetStream bucket, each revocation is audited.

A tenant's `tokens:admin` revokes and lists that tenant's tokens only (a token id names its
tenant, see accord_kit.tokens.tenant_of); only a service token revokes any token and sees
the whole list.

The list entry is written first, so a failure after it leaves the token revoked; the
`token.revoked` event has an id derived from the token id, so a retried call writes it at
most once and audit records it once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2
from nats.aio.client import Client
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from accord.events.v1 import policy_events_pb2
from accord.policy.v1 import token_service_pb2 as pb
from accord_kit import events, outbox, pages, revocations, tokens
from accord_kit.auth import Principal
from accord_kit.errors import PermissionDenied
from accord_policy import tables as t
from accord_policy.service import PRODUCER

_EVENTS = uuid.UUID("6f2b8e1c-3d4a-4f51-9a7e-0c2d1b5e8f30")


class TokenUseCases:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], nc: Client) -> None:
        self._sessions = sessions
        self._nc = nc

    async def revoke(self, by: Principal, request: pb.RevokeTokenRequest) -> pb.RevokedToken:
        owner = tokens.tenant_of(request.token_id)
        if not by.is_service and owner != by.tenant:
            raise PermissionDenied(
                "a tenant's token revokes only that tenant's tokens",
                metadata={"cause": "TENANT_MISMATCH"},
            )
        expires = request.expire_time.seconds if request.HasField("expire_time") else None
        entry, _ = await revocations.revoke(
            self._nc,
            request.token_id,
            reason=request.reason,
            revoked_by=by.subject,
            expires_at=float(expires) if expires else None,
        )
        envelope = events.envelope(
            producer=PRODUCER,
            aggregate="token",
            event="revoked",
            aggregate_id=entry.token_id,
            tenant_id=owner or by.tenant or "default",
            payload=policy_events_pb2.TokenRevoked(
                token_id=entry.token_id, reason=entry.reason, revoked_by=entry.revoked_by
            ),
            event_time=datetime.fromtimestamp(entry.revoked_at, UTC),
        )
        envelope.event_id = str(uuid.uuid5(_EVENTS, entry.token_id))
        try:
            async with self._sessions.begin() as s:
                await outbox.enqueue(s, t.outbox, envelope)
        except IntegrityError:
            pass  # a retried revocation: its event is already on its way
        return _message(entry)

    async def listed(
        self, by: Principal, request: pb.ListRevokedTokensRequest
    ) -> tuple[list[pb.RevokedToken], str]:
        """One page of the list, oldest revocation first, and the next page's token."""
        tenant = None if by.is_service else by.tenant or ""
        filters = ["revocations", tenant]
        position = pages.decode(request.page_token, filters, shape=(pages.TIME, pages.KEY))
        entries = sorted(await revocations.listed(self._nc, tenant), key=_key)
        if position is not None:
            after = (datetime.fromisoformat(position[0]), position[1])
            entries = [e for e in entries if _key(e) > after]
        limit = pages.page_size(request.page_size)
        page = entries[:limit]
        if len(entries) <= limit:
            return [_message(e) for e in page], ""
        last = _key(page[-1])
        return [_message(e) for e in page], pages.encode([last[0].isoformat(), last[1]], filters)


def _key(entry: revocations.Revocation) -> tuple[datetime, str]:
    return datetime.fromtimestamp(entry.revoked_at, UTC), entry.token_id


def _message(entry: revocations.Revocation) -> pb.RevokedToken:
    message = pb.RevokedToken(
        token_id=entry.token_id, reason=entry.reason, revoked_by=entry.revoked_by
    )
    message.revoke_time.CopyFrom(_timestamp(entry.revoked_at))
    if entry.expires_at is not None:
        message.expire_time.CopyFrom(_timestamp(entry.expires_at))
    return message


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return stamp
