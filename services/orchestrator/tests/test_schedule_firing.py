"""Firing against a simulated clock on a real database and policy: each overlap policy,
catch-up after a three-hour outage, pause and resume, with their events; and trigger and
backfill through the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2
from accord.events.v1 import envelope_pb2, job_events_pb2
from accord.orchestrator.v1 import job_pb2, schedule_pb2, schedule_service_pb2_grpc
from accord.orchestrator.v1 import job_service_pb2 as jpb
from accord.orchestrator.v1 import schedule_service_pb2 as pb
from accord_kit.testing import as_tenant, channel, eventually, stamp
from accord_orchestrator import schedule_store as ss
from accord_orchestrator.schedule_service import ScheduleUseCases

ACME = as_tenant("acme")
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Sim:
    cases: ScheduleUseCases
    clock: Clock
    stack: object

    async def at(self, when: datetime) -> None:
        """Move the clock and run one firing pass, as the loop would at that moment."""
        self.clock.now = when
        await self.cases.fire_due()

    async def actions(self, schedule_id: str) -> list[schedule_pb2.ScheduleAction]:
        async with self.stack.app.schedules._engine.connect() as s:  # type: ignore[attr-defined]
            found = await ss.recent_actions(s, [schedule_id], 1000)
        return sorted(found.get(schedule_id, []), key=lambda a: a.schedule_time.ToDatetime())

    async def jobs(self, schedule_id: str) -> list[job_pb2.Job]:
        found = await self.stack.jobs.ListJobs(  # type: ignore[attr-defined]
            jpb.ListJobsRequest(schedule_id=schedule_id, page_size=1000), metadata=ACME
        )
        return sorted(found.jobs, key=lambda j: j.request_id)


@pytest.fixture
async def sim(stack) -> Sim:  # type: ignore[no-untyped-def]
    await stack.app.firer.stop()  # the real loop would fire on the real clock
    clock = Clock()
    return Sim(stack.app.schedules.with_clock(clock), clock, stack)


def template() -> job_spec_pb2.JobSpec:
    return job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[
            job_spec_pb2.Step(
                name="page", request=job_spec_pb2.RequestStep(url="https://example.com/")
            )
        ],
    )


async def make(sim: Sim, cron: str, policy: int = 0, **kw: object) -> schedule_pb2.Schedule:
    s = schedule_pb2.Schedule(
        display_name=uuid.uuid4().hex,
        spec=schedule_pb2.ScheduleSpec(cron=cron),
        job_template=template(),
        overlap_policy=policy,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return await sim.cases.create("acme", uuid.uuid4().hex, s)


def kinds(actions: list[schedule_pb2.ScheduleAction]) -> list[tuple[str, str]]:
    """(minutes after T0, what happened) per action."""
    return [
        (
            f"+{int((a.schedule_time.ToDatetime(tzinfo=UTC) - T0) / MINUTE)}m",
            "job" if a.job_id else a.note.split(":")[0],
        )
        for a in actions
    ]


P = schedule_pb2


@pytest.mark.parametrize(
    ("policy", "expected", "states"),
    [
        (
            P.OVERLAP_POLICY_UNSPECIFIED,  # means SKIP
            [("+0m", "job"), ("+5m", "skipped"), ("+10m", "skipped")],
            [job_pb2.JOB_STATE_QUEUED],
        ),
        (
            P.OVERLAP_POLICY_ALLOW_ALL,
            [("+0m", "job"), ("+5m", "job"), ("+10m", "job")],
            [job_pb2.JOB_STATE_QUEUED] * 3,
        ),
        (
            P.OVERLAP_POLICY_CANCEL_PREVIOUS,
            [("+0m", "job"), ("+5m", "job"), ("+10m", "job")],
            [job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_QUEUED],
        ),
        (  # +5m waits in the buffer, +10m finds the buffer full
            P.OVERLAP_POLICY_BUFFER_ONE,
            [("+0m", "job"), ("+10m", "skipped")],
            [job_pb2.JOB_STATE_QUEUED],
        ),
    ],
)
async def test_each_overlap_policy(sim: Sim, policy: int, expected, states) -> None:  # type: ignore[no-untyped-def]
    made = await make(sim, "*/5 * * * *", policy)
    for minutes in (0, 5, 10):
        await sim.at(T0 + minutes * MINUTE)
    assert kinds(await sim.actions(made.schedule_id)) == expected
    assert [j.state for j in await sim.jobs(made.schedule_id)] == states


async def test_a_buffered_fire_starts_when_the_running_job_ends(sim: Sim) -> None:
    made = await make(sim, "*/5 * * * *", P.OVERLAP_POLICY_BUFFER_ONE)
    await sim.at(T0)
    await sim.at(T0 + 5 * MINUTE)
    [first] = await sim.jobs(made.schedule_id)
    await sim.at(T0 + 5 * MINUTE + 2 * timedelta(seconds=1))  # still running: still waits
    assert len(await sim.jobs(made.schedule_id)) == 1
    await sim.stack.app.jobs.cancel("acme", first.job_id, "done")  # type: ignore[attr-defined]
    await sim.at(T0 + 5 * MINUTE + 4 * timedelta(seconds=1))
    assert kinds(await sim.actions(made.schedule_id)) == [("+0m", "job"), ("+5m", "job")]
    jobs = await sim.jobs(made.schedule_id)
    assert [j.request_id for j in jobs] == [
        f"schedule:{made.schedule_id}:2026-06-01T12:00:00+00:00",
        f"schedule:{made.schedule_id}:2026-06-01T12:05:00+00:00",
    ]


async def test_catch_up_after_a_three_hour_outage(sim: Sim) -> None:
    """Fires older than the window are skipped and recorded; the rest start, in order."""
    made = await make(
        sim,
        "* * * * *",
        P.OVERLAP_POLICY_ALLOW_ALL,
        catchup_window=duration_pb2.Duration(seconds=600),
    )
    await sim.at(T0)
    await sim.at(T0 + 180 * MINUTE)  # down for three hours
    await sim.at(T0 + 180 * MINUTE + timedelta(seconds=1))  # a full pass leaves no more
    actions = await sim.actions(made.schedule_id)
    assert kinds(actions)[:2] == [("+0m", "job"), ("+1m", "missed")]
    assert actions[1].skipped
    assert actions[1].fire_count == 169
    assert kinds(actions)[2:] == [(f"+{m}m", "job") for m in range(170, 181)]
    assert len(await sim.jobs(made.schedule_id)) == 12
    got = await sim.cases.get("acme", made.schedule_id)
    assert got.next_fire_times[0].ToDatetime(tzinfo=UTC) == T0 + 181 * MINUTE


async def test_pause_and_resume_with_their_events(sim: Sim, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    seen: list[str] = []

    job_schedules: set[str] = set()

    async def record(msg) -> None:  # type: ignore[no-untyped-def]
        seen.append(envelope_pb2.EventEnvelope.FromString(msg.data).event_type.rsplit(".", 1)[1])

    async def record_job(msg) -> None:  # type: ignore[no-untyped-def]
        changed = job_events_pb2.JobStateChanged()
        envelope_pb2.EventEnvelope.FromString(msg.data).payload.Unpack(changed)
        job_schedules.add(changed.schedule_id)

    await nc.subscribe("accord.orchestrator.v1.schedule.>", cb=record)
    await nc.subscribe("accord.orchestrator.v1.job.queued", cb=record_job)
    try:
        made = await make(sim, "* * * * *", P.OVERLAP_POLICY_ALLOW_ALL)
        await sim.at(T0)
        paused = await sim.cases.pause("acme", made.schedule_id, "maintenance")
        assert paused.paused
        assert paused.pause_note == "maintenance"
        await sim.at(T0 + 5 * MINUTE)  # paused: nothing fires
        assert len(await sim.actions(made.schedule_id)) == 1
        sim.clock.now = T0 + 5 * MINUTE
        resumed = await sim.cases.resume("acme", made.schedule_id)
        assert not resumed.paused
        await sim.at(sim.clock.now)  # missed fires follow the catch-up window (1 min)
        assert kinds(await sim.actions(made.schedule_id)) == [
            ("+0m", "job"),
            ("+1m", "missed"),
            ("+4m", "job"),
            ("+5m", "job"),
        ]

        async def all_events() -> bool | None:
            wanted = {"created", "fired", "paused", "resumed", "skipped"}
            return True if wanted <= set(seen) else None

        await eventually(all_events, 15, f"schedule events (saw {seen})")

        async def job_event() -> bool | None:  # a fired job's event names its schedule
            return True if made.schedule_id in job_schedules else None

        await eventually(job_event, 15, "job.queued naming the schedule")
    finally:
        await nc.close()


@pytest.fixture
async def schedules(stack) -> AsyncIterator[schedule_service_pb2_grpc.ScheduleServiceStub]:  # type: ignore[no-untyped-def]
    async with channel(stack.app.port) as ch:
        yield schedule_service_pb2_grpc.ScheduleServiceStub(ch)


async def api_make(schedules, cron: str) -> schedule_pb2.Schedule:  # type: ignore[no-untyped-def]
    s = schedule_pb2.Schedule(
        display_name=uuid.uuid4().hex,
        spec=schedule_pb2.ScheduleSpec(cron=cron),
        job_template=template(),
    )
    made = await schedules.CreateSchedule(
        pb.CreateScheduleRequest(request_id=uuid.uuid4().hex, schedule=s), metadata=ACME
    )
    return made.schedule


async def test_trigger_runs_now_once_per_request_id_and_minds_the_overlap(schedules, stack) -> None:  # type: ignore[no-untyped-def]
    made = await api_make(schedules, "0 0 1 1 *")
    sid = made.schedule_id

    async def trigger(request_id: str, policy: int = 0) -> pb.TriggerScheduleResponse:
        return await schedules.TriggerSchedule(
            pb.TriggerScheduleRequest(
                schedule_id=sid, request_id=request_id, overlap_policy=policy
            ),  # type: ignore[arg-type]
            metadata=ACME,
        )

    first = await trigger("t1")
    assert first.job_id
    assert first.action.note == "trigger"
    assert (await trigger("t1")).job_id == first.job_id
    skipped = await trigger("t2")  # the schedule's SKIP: t1's job is still queued
    assert skipped.job_id == ""
    assert skipped.action.skipped
    forced = await trigger("t3", P.OVERLAP_POLICY_ALLOW_ALL)
    assert forced.job_id not in ("", first.job_id)
    found = await stack.jobs.ListJobs(jpb.ListJobsRequest(schedule_id=sid), metadata=ACME)
    assert {j.job_id for j in found.jobs} == {first.job_id, forced.job_id}


async def test_a_retried_trigger_or_backfill_makes_its_jobs_once(schedules, stack) -> None:  # type: ignore[no-untyped-def]
    """The same request_id: the first answer, no second job, action or event; the same id
    with another request is ALREADY_EXISTS."""
    made = await api_make(schedules, "0 * * * *")
    sid = made.schedule_id
    trigger = pb.TriggerScheduleRequest(
        schedule_id=sid, request_id="again-1", overlap_policy=P.OVERLAP_POLICY_ALLOW_ALL
    )
    first = await schedules.TriggerSchedule(trigger, metadata=ACME)
    assert await schedules.TriggerSchedule(trigger, metadata=ACME) == first
    backfill = pb.BackfillScheduleRequest(
        schedule_id=sid,
        start_time=stamp(datetime(2026, 1, 1, tzinfo=UTC)),
        end_time=stamp(datetime(2026, 1, 1, 3, tzinfo=UTC)),
        overlap_policy=P.OVERLAP_POLICY_ALLOW_ALL,
        request_id="again-2",
    )
    filled = await schedules.BackfillSchedule(backfill, metadata=ACME)
    assert len(filled.job_ids) == 3
    assert await schedules.BackfillSchedule(backfill, metadata=ACME) == filled
    jobs = await stack.jobs.ListJobs(jpb.ListJobsRequest(schedule_id=sid), metadata=ACME)
    assert {j.job_id for j in jobs.jobs} == {first.job_id, *filled.job_ids}
    async with stack.app.schedules._engine.connect() as s:
        actions = (await ss.recent_actions(s, [sid], 1000)).get(sid, [])
    assert len(actions) == 4  # one trigger, three backfilled fires: none twice
    backfill.end_time.CopyFrom(stamp(datetime(2026, 1, 1, 4, tzinfo=UTC)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await schedules.BackfillSchedule(backfill, metadata=ACME)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_backfill_fires_a_past_range_in_order_once(schedules, stack) -> None:  # type: ignore[no-untyped-def]
    made = await api_make(schedules, "0 * * * *")
    request = pb.BackfillScheduleRequest(
        schedule_id=made.schedule_id,
        start_time=stamp(datetime(2026, 1, 1, tzinfo=UTC)),
        end_time=stamp(datetime(2026, 1, 1, 5, tzinfo=UTC)),
        overlap_policy=P.OVERLAP_POLICY_ALLOW_ALL,
    )
    done = await schedules.BackfillSchedule(request, metadata=ACME)
    assert [a.schedule_time.ToDatetime().hour for a in done.actions] == [0, 1, 2, 3, 4]
    assert len(set(done.job_ids)) == 5
    again = await schedules.BackfillSchedule(request, metadata=ACME)
    assert list(again.job_ids) == list(done.job_ids)  # the same fires: the same jobs
    jobs = await stack.jobs.ListJobs(
        jpb.ListJobsRequest(schedule_id=made.schedule_id), metadata=ACME
    )
    assert len(jobs.jobs) == 5

    other = await api_make(schedules, "0 * * * *")
    request.schedule_id = other.schedule_id
    request.overlap_policy = P.OVERLAP_POLICY_UNSPECIFIED  # the schedule's: SKIP
    skipping = await schedules.BackfillSchedule(request, metadata=ACME)
    assert len(skipping.job_ids) == 1
    assert [a.skipped for a in skipping.actions] == [False, True, True, True, True]
    many = pb.BackfillScheduleRequest(
        schedule_id=other.schedule_id,
        start_time=stamp(datetime(2024, 1, 1, tzinfo=UTC)),
        end_time=stamp(datetime(2026, 1, 1, tzinfo=UTC)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # 17,520 fires: more than 10,000
        await schedules.BackfillSchedule(many, metadata=ACME)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
