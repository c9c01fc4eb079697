"""ScheduleService through generated stubs: CRUD, validation, tenancy, etags, and fires
made by the real firing loop (policy decision included)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2, schedule_pb2, schedule_service_pb2_grpc
from accord.orchestrator.v1 import job_service_pb2 as jpb
from accord.orchestrator.v1 import schedule_service_pb2 as pb
from accord_kit.testing import (
    as_tenant,
    channel,
    eventually,
    field_violations,
    refused,
    stamp,
    unrunnable_specs,
)

ACME, OTHER = as_tenant("acme"), as_tenant("other")


def template(url: str = "https://example.com/") -> job_spec_pb2.JobSpec:
    return job_spec_pb2.JobSpec(
        engine=job_spec_pb2.ENGINE_HTTP,
        steps=[job_spec_pb2.Step(name="page", request=job_spec_pb2.RequestStep(url=url))],
    )


def schedule(**spec: object) -> schedule_pb2.Schedule:
    return schedule_pb2.Schedule(
        display_name=f"s-{uuid.uuid4().hex[:8]}",
        spec=schedule_pb2.ScheduleSpec(**spec or {"cron": "0 9 * * *"}),  # type: ignore[arg-type]
        job_template=template(),
    )


@pytest.fixture
async def schedules(stack) -> AsyncIterator[schedule_service_pb2_grpc.ScheduleServiceStub]:  # type: ignore[no-untyped-def]
    async with channel(stack.app.port) as ch:
        yield schedule_service_pb2_grpc.ScheduleServiceStub(ch)


async def create(stub, s=None, md=ACME, request_id=None) -> schedule_pb2.Schedule:  # type: ignore[no-untyped-def]
    response = await stub.CreateSchedule(
        pb.CreateScheduleRequest(
            request_id=request_id or uuid.uuid4().hex, schedule=s or schedule()
        ),
        metadata=md,
    )
    return response.schedule


async def test_create_get_list_update_delete(schedules) -> None:  # type: ignore[no-untyped-def]
    s = schedule(cron="30 2 * * *", time_zone="America/New_York")
    s.labels["team"] = "web"
    made = await create(schedules, s, request_id="r1")
    assert made.schedule_id
    assert made.etag
    assert made.tenant_id == "acme"
    assert len(made.next_fire_times) == 10
    for t in made.next_fire_times:  # 02:30 New York, or 03:00 on the day of the gap
        local = t.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(s.spec.time_zone))
        assert (local.hour, local.minute) in {(2, 30), (3, 0)}
    again = await create(schedules, s, request_id="r1")  # idempotent
    assert again.schedule_id == made.schedule_id
    s.job_template.priority = 5
    err = await refused(
        schedules.CreateSchedule(
            pb.CreateScheduleRequest(request_id="r1", schedule=s), metadata=ACME
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS

    got = (
        await schedules.GetSchedule(
            pb.GetScheduleRequest(schedule_id=made.schedule_id), metadata=ACME
        )
    ).schedule
    assert got.display_name == made.display_name
    assert got.etag == made.etag

    other = await create(schedules, schedule(interval=duration_pb2.Duration(seconds=3600)))
    await schedules.PauseSchedule(
        pb.PauseScheduleRequest(schedule_id=other.schedule_id, note="x"), metadata=ACME
    )
    listed = await schedules.ListSchedules(
        pb.ListSchedulesRequest(labels={"team": "web"}), metadata=ACME
    )
    assert [x.schedule_id for x in listed.schedules] == [made.schedule_id]
    paused = await schedules.ListSchedules(pb.ListSchedulesRequest(paused=True), metadata=ACME)
    assert [x.schedule_id for x in paused.schedules] == [other.schedule_id]
    assert paused.schedules[0].pause_note == "x"
    first = await schedules.ListSchedules(pb.ListSchedulesRequest(page_size=1), metadata=ACME)
    second = await schedules.ListSchedules(
        pb.ListSchedulesRequest(page_size=1, page_token=first.next_page_token), metadata=ACME
    )
    assert {first.schedules[0].schedule_id, second.schedules[0].schedule_id} == {
        made.schedule_id,
        other.schedule_id,
    }
    assert second.next_page_token == ""

    change = schedule_pb2.Schedule(
        schedule_id=made.schedule_id,
        etag=made.etag,
        spec=schedule_pb2.ScheduleSpec(cron="0 12 * * *", time_zone="Europe/Berlin"),
        overlap_policy=schedule_pb2.OVERLAP_POLICY_ALLOW_ALL,
    )
    updated = (
        await schedules.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=change,
                update_mask=field_mask_pb2.FieldMask(paths=["spec", "overlap_policy"]),
            ),
            metadata=ACME,
        )
    ).schedule
    assert updated.etag != made.etag
    assert updated.overlap_policy == schedule_pb2.OVERLAP_POLICY_ALLOW_ALL
    assert updated.display_name == made.display_name  # not in the mask: kept
    noon = updated.next_fire_times[0].ToDatetime(tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    assert (noon.hour, noon.minute) == (12, 0)
    stale = await refused(
        schedules.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=change, update_mask=field_mask_pb2.FieldMask(paths=["spec"])
            ),
            metadata=ACME,
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED

    taken = schedule_pb2.Schedule(
        schedule_id=made.schedule_id, etag=updated.etag, display_name=other.display_name
    )
    clash = await refused(
        schedules.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=taken, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
            ),
            metadata=ACME,
        )
    )
    assert clash.code() == grpc.StatusCode.ALREADY_EXISTS  # names are unique per tenant
    same_name = schedule()
    same_name.display_name = other.display_name
    assert (await refused(create(schedules, same_name))).code() == grpc.StatusCode.ALREADY_EXISTS
    await create(schedules, same_name, md=OTHER)  # another tenant's names are its own

    stale = await refused(
        schedules.DeleteSchedule(
            pb.DeleteScheduleRequest(schedule_id=made.schedule_id, etag=made.etag), metadata=ACME
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED  # the etag read before the update
    await schedules.DeleteSchedule(
        pb.DeleteScheduleRequest(schedule_id=made.schedule_id, etag=updated.etag), metadata=ACME
    )
    gone = await refused(
        schedules.GetSchedule(pb.GetScheduleRequest(schedule_id=made.schedule_id), metadata=ACME)
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


async def test_repeats_of_a_change_with_one_request_id_change_it_once(schedules) -> None:  # type: ignore[no-untyped-def]
    """Update, pause, resume and delete: the first answer again (the same etag: one
    change), ALREADY_EXISTS for another request under the id, NOT_FOUND only without one."""
    made = await create(schedules)
    change = schedule_pb2.Schedule(
        schedule_id=made.schedule_id, etag=made.etag, display_name=uuid.uuid4().hex
    )
    update = pb.UpdateScheduleRequest(
        schedule=change,
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        request_id="u1",
    )
    updated = await schedules.UpdateSchedule(update, metadata=ACME)
    assert await schedules.UpdateSchedule(update, metadata=ACME) == updated
    pause = pb.PauseScheduleRequest(schedule_id=made.schedule_id, note="n", request_id="p1")
    paused = (await schedules.PauseSchedule(pause, metadata=ACME)).schedule
    assert paused.paused
    assert paused.etag != updated.schedule.etag
    resume = pb.ResumeScheduleRequest(schedule_id=made.schedule_id, request_id="r1")
    resumed = (await schedules.ResumeSchedule(resume, metadata=ACME)).schedule
    again = (await schedules.PauseSchedule(pause, metadata=ACME)).schedule
    assert again == paused  # the first answer; the schedule stays resumed
    current = (
        await schedules.GetSchedule(
            pb.GetScheduleRequest(schedule_id=made.schedule_id), metadata=ACME
        )
    ).schedule
    assert not current.paused
    assert current.etag == resumed.etag
    pause.note = "another"
    err = await refused(schedules.PauseSchedule(pause, metadata=ACME))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    err = await refused(  # ids are one space per tenant: another RPC under it is refused
        schedules.DeleteSchedule(
            pb.DeleteScheduleRequest(schedule_id=made.schedule_id, request_id="r1"), metadata=ACME
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    delete = pb.DeleteScheduleRequest(schedule_id=made.schedule_id, request_id="d1")
    await schedules.DeleteSchedule(delete, metadata=ACME)
    await schedules.DeleteSchedule(delete, metadata=ACME)
    err = await refused(
        schedules.DeleteSchedule(
            pb.DeleteScheduleRequest(schedule_id=made.schedule_id), metadata=ACME
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"cron": "61 * * * *"}, "schedule.spec.cron"),
        ({"cron": "0 0 30 2 *"}, "schedule.spec.cron"),
        ({"cron": "0 * * * *", "time_zone": "Mars/Olympus"}, "schedule.spec.time_zone"),
        ({"rrule": "FREQ=SOMETIMES"}, "schedule.spec.rrule"),
        ({"interval": duration_pb2.Duration(nanos=1000)}, "schedule.spec.interval"),
        ({"time_zone": "UTC"}, "schedule.spec.kind"),
    ],
)
async def test_invalid_calendars_are_refused_naming_the_field(schedules, spec, field) -> None:  # type: ignore[no-untyped-def]
    err = await refused(
        schedules.CreateSchedule(
            pb.CreateScheduleRequest(
                request_id="bad",
                schedule=schedule_pb2.Schedule(
                    display_name="bad",
                    spec=schedule_pb2.ScheduleSpec(**spec),
                    job_template=template(),
                ),
            ),
            metadata=ACME,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err)
    listed = await schedules.ListSchedules(pb.ListSchedulesRequest(), metadata=ACME)
    assert list(listed.schedules) == []  # nothing stored


@pytest.mark.parametrize(("bad", "field"), unrunnable_specs("https://example.com/"))
async def test_a_job_template_that_could_never_run_is_refused(schedules, bad, field) -> None:  # type: ignore[no-untyped-def]
    """CreateSchedule and UpdateSchedule check the template as CreateJob checks a spec."""
    wrong = schedule()
    wrong.job_template.CopyFrom(bad)
    err = await refused(create(schedules, wrong))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == [f"schedule.job_template.{field}"]
    listed = await schedules.ListSchedules(pb.ListSchedulesRequest(), metadata=ACME)
    assert list(listed.schedules) == []  # nothing stored

    made = await create(schedules)
    change = schedule_pb2.Schedule(schedule_id=made.schedule_id, etag=made.etag, job_template=bad)
    mask = field_mask_pb2.FieldMask(paths=["job_template"])
    err = await refused(
        schedules.UpdateSchedule(
            pb.UpdateScheduleRequest(schedule=change, update_mask=mask), metadata=ACME
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(err)) == [f"schedule.job_template.{field}"]
    got = await schedules.GetSchedule(
        pb.GetScheduleRequest(schedule_id=made.schedule_id), metadata=ACME
    )
    assert got.schedule.etag == made.etag  # unchanged
    assert got.schedule.job_template == made.job_template


async def test_invalid_requests_of_every_rpc(schedules) -> None:  # type: ignore[no-untyped-def]
    made = await create(schedules)
    sid = made.schedule_id
    cases = [
        (
            schedules.CreateSchedule(
                pb.CreateScheduleRequest(request_id="", schedule=schedule()), metadata=ACME
            ),
            "request_id",
        ),
        (
            schedules.CreateSchedule(pb.CreateScheduleRequest(request_id="x"), metadata=ACME),
            "schedule",
        ),
        (
            schedules.CreateSchedule(
                pb.CreateScheduleRequest(
                    request_id="y",
                    schedule=schedule_pb2.Schedule(
                        display_name="n", spec=schedule_pb2.ScheduleSpec(cron="0 * * * *")
                    ),
                ),
                metadata=ACME,
            ),
            "schedule.job_template",
        ),
        (
            schedules.CreateSchedule(
                pb.CreateScheduleRequest(
                    request_id="z",
                    schedule=schedule_pb2.Schedule(
                        spec=schedule_pb2.ScheduleSpec(cron="0 * * * *"), job_template=template()
                    ),
                ),
                metadata=ACME,
            ),
            "schedule.display_name",
        ),
        (schedules.GetSchedule(pb.GetScheduleRequest(), metadata=ACME), "schedule_id"),
        (
            schedules.ListSchedules(pb.ListSchedulesRequest(page_size=5000), metadata=ACME),
            "page_size",
        ),
        (
            schedules.ListSchedules(pb.ListSchedulesRequest(page_token="garbage!"), metadata=ACME),
            "page_token",
        ),
        (
            schedules.UpdateSchedule(pb.UpdateScheduleRequest(schedule=made), metadata=ACME),
            "update_mask",
        ),
        (
            schedules.UpdateSchedule(
                pb.UpdateScheduleRequest(
                    schedule=made, update_mask=field_mask_pb2.FieldMask(paths=["tenant_id"])
                ),
                metadata=ACME,
            ),
            "update_mask",
        ),
        (
            schedules.UpdateSchedule(
                pb.UpdateScheduleRequest(
                    schedule=schedule_pb2.Schedule(
                        schedule_id=sid,
                        etag=made.etag,
                        spec=schedule_pb2.ScheduleSpec(cron="bad cron x"),
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["spec"]),
                ),
                metadata=ACME,
            ),
            "schedule.spec.cron",
        ),
        (
            schedules.UpdateSchedule(
                pb.UpdateScheduleRequest(
                    schedule=schedule_pb2.Schedule(schedule_id=sid, display_name="x"),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                ),
                metadata=ACME,
            ),
            "schedule.etag",
        ),
        (schedules.DeleteSchedule(pb.DeleteScheduleRequest(), metadata=ACME), "schedule_id"),
        (
            schedules.PauseSchedule(
                pb.PauseScheduleRequest(schedule_id=sid, note="n" * 2000), metadata=ACME
            ),
            "note",
        ),
        (schedules.ResumeSchedule(pb.ResumeScheduleRequest(), metadata=ACME), "schedule_id"),
        (
            schedules.TriggerSchedule(pb.TriggerScheduleRequest(schedule_id=sid), metadata=ACME),
            "request_id",
        ),
        (
            schedules.TriggerSchedule(
                pb.TriggerScheduleRequest(schedule_id=sid, request_id="t", overlap_policy=99),
                metadata=ACME,
            ),
            "overlap_policy",
        ),
        (
            schedules.BackfillSchedule(pb.BackfillScheduleRequest(schedule_id=sid), metadata=ACME),
            "start_time",
        ),
        (
            schedules.BackfillSchedule(
                pb.BackfillScheduleRequest(
                    schedule_id=sid,
                    start_time=stamp(datetime.now(UTC)),
                    end_time=stamp(datetime.now(UTC) + timedelta(hours=1)),
                ),
                metadata=ACME,
            ),
            "end_time",
        ),
    ]
    for call, field in cases:
        err = await refused(call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in field_violations(err), (field, field_violations(err))


async def test_unknown_and_other_tenants_schedules_are_not_found(schedules) -> None:  # type: ignore[no-untyped-def]
    mine = await create(schedules)
    unknown = "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a"
    for sid, md in ((mine.schedule_id, OTHER), (unknown, ACME)):
        calls = [
            schedules.GetSchedule(pb.GetScheduleRequest(schedule_id=sid), metadata=md),
            schedules.UpdateSchedule(
                pb.UpdateScheduleRequest(
                    schedule=schedule_pb2.Schedule(
                        schedule_id=sid, etag=mine.etag, display_name="z"
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                ),
                metadata=md,
            ),
            schedules.DeleteSchedule(pb.DeleteScheduleRequest(schedule_id=sid), metadata=md),
            schedules.PauseSchedule(pb.PauseScheduleRequest(schedule_id=sid), metadata=md),
            schedules.ResumeSchedule(pb.ResumeScheduleRequest(schedule_id=sid), metadata=md),
            schedules.TriggerSchedule(
                pb.TriggerScheduleRequest(schedule_id=sid, request_id="t"), metadata=md
            ),
            schedules.BackfillSchedule(
                pb.BackfillScheduleRequest(
                    schedule_id=sid,
                    start_time=stamp(datetime(2026, 1, 1, tzinfo=UTC)),
                    end_time=stamp(datetime(2026, 1, 2, tzinfo=UTC)),
                ),
                metadata=md,
            ),
        ]
        for call in calls:
            assert (await refused(call)).code() == grpc.StatusCode.NOT_FOUND
    assert (
        await schedules.ListSchedules(pb.ListSchedulesRequest(), metadata=OTHER)
    ).schedules == []
    still = await schedules.GetSchedule(
        pb.GetScheduleRequest(schedule_id=mine.schedule_id.upper()), metadata=ACME
    )
    assert still.schedule.etag == mine.etag  # ids are UUIDs, in any case
    not_an_id = await refused(
        schedules.GetSchedule(pb.GetScheduleRequest(schedule_id="no-such-id"), metadata=ACME)
    )
    assert not_an_id.code() == grpc.StatusCode.INVALID_ARGUMENT
    renamed = await schedules.UpdateSchedule(
        pb.UpdateScheduleRequest(
            schedule=schedule_pb2.Schedule(
                schedule_id=mine.schedule_id.upper(), etag=mine.etag, display_name="renamed"
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=ACME,
    )
    assert renamed.schedule.schedule_id == mine.schedule_id
    not_an_id = await refused(
        schedules.UpdateSchedule(
            pb.UpdateScheduleRequest(
                schedule=schedule_pb2.Schedule(
                    schedule_id="no-such-id", etag=renamed.schedule.etag, display_name="x"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=ACME,
        )
    )
    assert not_an_id.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not still.schedule.paused


async def jobs_of(stack, schedule_id: str, md=ACME) -> list[job_pb2.Job]:  # type: ignore[no-untyped-def]
    found = await stack.jobs.ListJobs(
        jpb.ListJobsRequest(schedule_id=schedule_id, page_size=1000), metadata=md
    )
    return sorted(found.jobs, key=lambda j: j.request_id)


async def test_the_loop_fires_on_time_and_a_denied_target_makes_rejected_jobs(
    stack, schedules
) -> None:  # type: ignore[no-untyped-def]
    # Every second, and no executor runs them: ALLOW_ALL fires whatever is still queued.
    every = schedule(cron="* * * * * *")
    every.overlap_policy = schedule_pb2.OVERLAP_POLICY_ALLOW_ALL
    allowed = await create(schedules, every)
    denied_schedule = schedule(cron="* * * * * *")
    denied_schedule.overlap_policy = schedule_pb2.OVERLAP_POLICY_ALLOW_ALL
    denied_schedule.job_template.CopyFrom(template("https://evil.test/"))
    denied = await create(schedules, denied_schedule)

    async def two(sid: str) -> list[job_pb2.Job] | None:
        found = await jobs_of(stack, sid)
        return found if len(found) >= 2 else None

    ok_jobs = await eventually(lambda: two(allowed.schedule_id), 15, "two fires")
    bad_jobs = await eventually(lambda: two(denied.schedule_id), 15, "two denied fires")
    for sid in (allowed.schedule_id, denied.schedule_id):
        await schedules.PauseSchedule(pb.PauseScheduleRequest(schedule_id=sid), metadata=ACME)
    assert {j.state for j in ok_jobs} == {job_pb2.JOB_STATE_QUEUED}
    assert {j.schedule_id for j in ok_jobs} == {allowed.schedule_id}
    assert all(j.request_id.startswith(f"schedule:{allowed.schedule_id}:") for j in ok_jobs)
    assert {j.state for j in bad_jobs} == {job_pb2.JOB_STATE_REJECTED}
    assert all(j.decision.reasons for j in bad_jobs)
    got = (
        await schedules.GetSchedule(
            pb.GetScheduleRequest(schedule_id=denied.schedule_id), metadata=ACME
        )
    ).schedule
    fired = [a for a in got.recent_actions if a.job_id]
    assert fired
    assert {a.job_state for a in fired} == {job_pb2.JOB_STATE_REJECTED}
    for a in fired:  # never early (how late is the benchmark's to measure)
        assert a.fire_time.ToDatetime() >= a.schedule_time.ToDatetime()
