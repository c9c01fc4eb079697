"""Recording state changes: the `changes` rows WatchJob streams and the outbox events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from accord.common.v1 import decision_pb2
from accord.events.v1 import job_events_pb2
from accord.orchestrator.v1 import job_pb2
from accord_kit import events, outbox
from accord_orchestrator import store
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as rules

PRODUCER = "orchestrator"


def to_change(c: store.Change) -> job_pb2.JobStateChange:
    change = job_pb2.JobStateChange(
        version=c.version,
        previous_state=job_pb2.JobState.ValueType(c.previous_state),
        state=job_pb2.JobState.ValueType(c.state),
        attempt=c.attempt,
        message=c.message,
    )
    change.change_time.FromDatetime(c.time)
    return change


async def record(
    s: AsyncSession,
    changes: Sequence[store.Change],
    decision: decision_pb2.PolicyDecision | None = None,
    request_id: str = "",
) -> None:
    """Write the changes and one event each, in the caller's transaction."""
    await store.insert_changes(s, changes)
    envelopes = [
        events.envelope(
            producer=PRODUCER,
            aggregate="job",
            event=rules.event_name(c.state),
            aggregate_id=c.job_id,
            tenant_id=c.tenant_id,
            event_time=c.time,
            payload=job_events_pb2.JobStateChanged(
                job_id=c.job_id,
                change=to_change(c),
                decision=decision,
                request_id=request_id,
            ),
        )
        for c in changes
    ]
    await outbox.enqueue(s, t.outbox, *envelopes)
