"""Recording state changes: the `changes` rows WatchJob streams and their outbox events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from accord.common.v1 import decision_pb2
from accord.events.v1 import job_events_pb2
from accord.orchestrator.v1 import job_pb2
from accord_kit import events, outbox
from accord_orchestrator import store
from accord_orchestrator import tables as t
from accord_orchestrator.domain import jobs as rules

PRODUCER = "orchestrator"
# What an admission event carries besides the change: the decision and the request id.
Admission = tuple[decision_pb2.PolicyDecision, str]


def to_change(c: rules.Change) -> job_pb2.JobStateChange:
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
    s: AsyncConnection,
    changes: Sequence[rules.Change],
    admissions: Mapping[str, Admission] | None = None,
    schedule_ids: Mapping[str, str] | None = None,
) -> None:
    """Write the changes and one event each, in the caller's transaction. `schedule_ids`
    names the schedule of jobs a schedule fired."""
    await store.insert_changes(s, changes)
    admitted = admissions or {}
    envelopes = []
    for c in changes:
        decision, request_id = admitted.get(c.job_id, (None, ""))
        envelopes.append(
            events.envelope(
                producer=PRODUCER,
                aggregate="job",
                event=rules.event_name(c.state),
                aggregate_id=c.job_id,
                tenant_id=c.tenant_id,
                event_time=c.time,
                traceparent=c.traceparent,
                payload=job_events_pb2.JobStateChanged(
                    job_id=c.job_id,
                    change=to_change(c),
                    decision=decision,
                    request_id=request_id,
                    schedule_id=(schedule_ids or {}).get(c.job_id, ""),
                ),
            )
        )
    await outbox.enqueue(s, t.outbox, *envelopes)


async def commit(s: AsyncConnection, transitions: Sequence[rules.Transition]) -> None:
    """Apply the transitions and record their changes: one transaction, whatever its size."""
    await store.apply(s, transitions)
    await record(s, [tr.change for tr in transitions])
