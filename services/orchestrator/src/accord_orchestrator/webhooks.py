"""Webhook delivery: each attempt asks the policy for the receiver's URL (the SSRF and
domain rules every request of a job meets), POSTs to exactly the address it checked, and
is signed afresh; failed attempts come back with exponential backoff and full jitter.

Deliveries are rows: the loop claims due ones with SKIP LOCKED and moves their next
attempt past the send, so replicas never send one twice at once, and a replica that dies
mid-send leaves the delivery to be tried again (receivers deduplicate on its id).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog
from google.protobuf import duration_pb2, json_format
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.events.v1 import workflow_events_pb2
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord.policy.v1 import policy_service_pb2
from accord_kit import events, outbox
from accord_kit.backoff import Backoff
from accord_kit.errors import AccordError
from accord_kit.pinning import pin
from accord_kit.policy import PolicyClient
from accord_orchestrator import store
from accord_orchestrator import tables as t
from accord_orchestrator import workflow_store as ws
from accord_orchestrator.domain import signing
from accord_orchestrator.history import PRODUCER
from accord_orchestrator.secrets import SecretBox

log = structlog.get_logger("accord.webhooks")
USER_AGENT = "Accord-Webhooks/0.1 (+https://accord.dev/webhooks)"


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    initial_backoff: float = 1.0
    max_backoff: float = 300.0
    timeout: float = 10.0  # seconds one attempt may take, policy decision included
    in_flight: float = 60.0  # seconds a claimed delivery is held before another may try


def payload(
    delivery_id: str,
    kind: int,
    workflow_id: str,
    name: str,
    result: wf.WorkflowResult | None,
    now: datetime,
) -> bytes:
    body = wsp.WebhookPayload(
        delivery_id=delivery_id,
        kind=wf.NotificationKind.ValueType(kind),
        workflow_id=workflow_id,
        workflow_name=name,
        result=result,
    )
    body.create_time.FromDatetime(now)
    as_dict = json_format.MessageToDict(body, preserving_proto_field_name=True)
    return json.dumps(as_dict, separators=(",", ":"), sort_keys=True).encode()


def new_row(
    hook: ws.Hook,
    kind: int,
    result_id: str,
    body: bytes,
    delivery_id: str,
    request_id: str,
    now: datetime,
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "webhook_id": hook.webhook_id,
        "workflow_id": hook.workflow_id,
        "tenant_id": hook.tenant_id,
        "request_id": request_id or delivery_id,
        "kind": kind,
        "result_id": result_id,
        "payload": body,
        "state": ws.PENDING,
        "attempts": [],
        "next_time": now,
        "create_time": now,
        "update_time": now,
    }


def to_delivery(r: Row[Any]) -> wsp.WebhookDelivery:
    d = wsp.WebhookDelivery(
        delivery_id=r.delivery_id,
        webhook_id=r.webhook_id,
        workflow_id=r.workflow_id,
        kind=wf.NotificationKind.ValueType(r.kind),
        result_id=r.result_id,
        state=wsp.DeliveryState.ValueType(r.state),
    )
    d.create_time.FromDatetime(r.create_time)
    if r.state == ws.PENDING and r.next_time is not None:
        d.next_attempt_time.FromDatetime(r.next_time)
    for a in r.attempts:
        attempt = d.attempts.add(http_status=a["status"], error_message=a["error"])
        attempt.attempt_time.FromDatetime(datetime.fromisoformat(a["time"]))
    return d


@dataclass(frozen=True)
class Attempted:
    status: int
    error: str
    refused: bool = False  # the policy refused the URL: retrying will not help

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.error


class Sender:
    """One signed POST to a policed, pinned address."""

    def __init__(self, policy: PolicyClient, timeout: float) -> None:
        self._policy = policy
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, hook: ws.Hook, mode: int, delivery_id: str, kind: int, body: bytes, secret: str
    ) -> Attempted:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._send(hook, mode, delivery_id, kind, body, secret)
        except TimeoutError:
            return Attempted(0, f"no answer within {self._timeout:g}s")

    async def _send(
        self, hook: ws.Hook, mode: int, delivery_id: str, kind: int, body: bytes, secret: str
    ) -> Attempted:
        permit = await self._permit(hook, mode, delivery_id)
        if isinstance(permit, Attempted):
            return permit
        address, permit_id = permit
        try:
            pinned = pin(hook.url, address)
            stamp = int(time.time())  # signed now: every attempt carries a fresh timestamp
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Host": pinned.host_header,
                "Accord-Webhook-Id": delivery_id,
                "Accord-Webhook-Event": wf.NotificationKind.Name(
                    wf.NotificationKind.ValueType(kind)
                ),
                "Accord-Webhook-Timestamp": str(stamp),
                "Accord-Webhook-Signature": signing.sign(secret, stamp, body),
            }
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
            async with self._session.post(
                URL(pinned.url, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
                server_hostname=pinned.server_hostname,
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return Attempted(response.status, "")
                return Attempted(response.status, f"the receiver answered {response.status}")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempted(0, f"POST failed: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(AccordError):
                await self._policy.release(hook.tenant_id, permit_id)

    async def _permit(
        self, hook: ws.Hook, mode: int, delivery_id: str
    ) -> tuple[str, str] | Attempted:
        """The checked address and permit, or the attempt's failure."""
        while True:
            request = policy_service_pb2.AcquirePermitRequest(
                url=hook.url,
                engine=job_spec_pb2.ENGINE_HTTP,
                job_id=delivery_id,
                authorization_mode=job_spec_pb2.AuthorizationMode.ValueType(mode),
                lease=duration_pb2.Duration(seconds=max(int(self._timeout), 1)),
            )
            try:
                answer = await self._policy.acquire(hook.tenant_id, request)
            except AccordError as exc:
                return Attempted(0, f"the policy service could not decide: {exc.message}")
            d = answer.decision
            if d.outcome != decision_pb2.DECISION_OUTCOME_ALLOW:
                why = "; ".join(f"{r.code}: {r.message}" for r in d.reasons) or "no reason"
                return Attempted(
                    0, f"policy refused the URL (decision {d.decision_id}): {why}", refused=True
                )
            if answer.granted:
                return answer.address, answer.permit_id
            await asyncio.sleep(max(answer.retry_after.ToTimedelta().total_seconds(), 0.01))


class Deliverer:
    """The loop that sends due deliveries and records each attempt."""

    def __init__(
        self,
        engine: AsyncEngine,
        sender: Sender,
        box: SecretBox | None,
        rules: DeliveryPolicy,
        idle: float = 1.0,
        batch: int = 32,
    ) -> None:
        self._engine = engine
        self._sender = sender
        self._box = box
        self._rules = rules
        self._idle = idle
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed pass is tried again; the loop must not die
                log.warning("webhooks.pass_failed", error_type=type(exc).__name__)
                sent = 0
            if sent:
                continue
            pause = await self._sleep()  # before wait() makes a coroutine a cancel would orphan
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
            self._wake.clear()

    async def _sleep(self) -> float:
        try:
            async with self._engine.connect() as s:
                due = await ws.earliest_delivery(s)
        except Exception as exc:  # the database is away: look again after the idle time
            log.warning("webhooks.look_failed", error_type=type(exc).__name__)
            return self._idle
        if due is None:
            return self._idle
        return min(max((due - store.utcnow()).total_seconds(), 0.01), self._idle)

    async def deliver_due(self) -> int:
        now = store.utcnow()
        async with self._engine.begin() as s:
            rows = await ws.claim_deliveries(
                s, now, now + timedelta(seconds=self._rules.in_flight), self._batch
            )
        await asyncio.gather(*(self.attempt(r, self._rules.max_attempts) for r in rows))
        return len(rows)

    async def attempt(self, row: Row[Any], max_attempts: int) -> None:
        """One attempt of a claimed delivery, recorded; the last allowed one settles it."""
        async with self._engine.connect() as s:
            hook = await ws.hook(s, row.webhook_id)
            found = await ws.get(s, row.tenant_id, row.workflow_id)
        if hook is None or found is None:
            return  # deleted meanwhile, with its deliveries
        started = store.utcnow()
        if self._box is None:
            outcome = Attempted(0, "no webhook key is configured", refused=True)
        else:
            secret = self._box.open(hook.sealed, hook.webhook_id)
            outcome = await self._sender.send(
                hook,
                found.body.authorization_mode,
                row.delivery_id,
                row.kind,
                row.payload,
                secret,
            )
        await self._record(row, outcome, started, max_attempts)

    async def _record(
        self, row: Row[Any], outcome: Attempted, started: datetime, max_attempts: int
    ) -> None:
        attempts = [
            *row.attempts,
            {"time": started.isoformat(), "status": outcome.status, "error": outcome.error},
        ]
        now = store.utcnow()
        values: dict[str, Any] = {"attempts": attempts, "update_time": now}
        if outcome.ok:
            values |= {"state": ws.DELIVERED, "next_time": None}
        elif outcome.refused or len(attempts) >= max_attempts:
            values |= {"state": ws.FAILED, "next_time": None}
        else:
            delay = Backoff(
                self._rules.initial_backoff, self._rules.max_backoff, attempt=len(attempts) - 1
            ).next()
            values["next_time"] = now + timedelta(seconds=delay)
        async with self._engine.begin() as s:
            if await ws.delivery(s, row.delivery_id) is None:
                return
            await ws.save_delivery(s, row.delivery_id, **values)
            if values.get("state") in {ws.DELIVERED, ws.FAILED}:
                await outbox.enqueue(s, t.outbox, _ended(row, values["state"], outcome, attempts))
        log.info(
            "webhooks.attempt",
            delivery_id=row.delivery_id,
            webhook_id=row.webhook_id,
            attempt=len(attempts),
            http_status=outcome.status,
            ok=outcome.ok,
        )


def _ended(row: Row[Any], state: int, outcome: Attempted, attempts: list[Any]) -> Any:
    return events.envelope(
        producer=PRODUCER,
        aggregate="webhook",
        event="delivered" if state == ws.DELIVERED else "failed",
        aggregate_id=row.webhook_id,
        tenant_id=row.tenant_id,
        payload=workflow_events_pb2.WebhookDeliveryEnded(
            delivery_id=row.delivery_id,
            webhook_id=row.webhook_id,
            workflow_id=row.workflow_id,
            kind=wf.NotificationKind.ValueType(row.kind),
            attempts=len(attempts),
            http_status=outcome.status,
            error_message=outcome.error,
        ),
    )


def _kind_name(kind: int) -> str:
    return wf.NotificationKind.Name(wf.NotificationKind.ValueType(kind))


def new_id() -> str:
    return str(uuid.uuid4())
