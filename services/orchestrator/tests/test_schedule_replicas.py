"""Two orchestrators on one database fire the same schedules: every fire makes exactly one
job, and none is missed."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2
from sqlalchemy import func, select

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import schedule_pb2
from accord_kit.testing import eventually
from accord_orchestrator import tables as t
from accord_orchestrator.app import App
from accord_orchestrator.domain import schedules as rules

SCHEDULES = 200
# Seconds of fires: enough to show each fire exactly once; more only lengthens the test.
SECONDS = int(os.environ.get("ACCORD_TEST_REPLICA_SECONDS", "10"))


async def test_two_replicas_fire_each_fire_exactly_once(stack) -> None:  # type: ignore[no-untyped-def]
    second = App(stack.app.settings.model_copy(update={"port": 0, "metrics_port": 0}))
    await second.start()
    try:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        end = start + timedelta(seconds=SECONDS - 1)
        ids = []
        for i in range(SCHEDULES):
            s = schedule_pb2.Schedule(
                display_name=f"r{i}",
                spec=schedule_pb2.ScheduleSpec(interval=duration_pb2.Duration(seconds=1)),
                job_template=job_spec_pb2.JobSpec(
                    engine=job_spec_pb2.ENGINE_HTTP,
                    steps=[
                        job_spec_pb2.Step(
                            name="p",
                            request=job_spec_pb2.RequestStep(url="https://example.com/"),
                        )
                    ],
                ),
                overlap_policy=schedule_pb2.OVERLAP_POLICY_ALLOW_ALL,
                # Generous, so a slow shared machine delays fires instead of skipping them.
                catchup_window=duration_pb2.Duration(seconds=3600),
            )
            s.spec.start_time.FromDatetime(start)
            s.spec.end_time.FromDatetime(end)
            # Half through each replica's API: each wakes its own loop.
            app = stack.app if i % 2 else second
            made = await app.schedules.create("acme", f"r{i}", s)
            ids.append((made.schedule_id, made.create_time.ToDatetime(UTC)))
        # A schedule owes the fires from its creation on: on a slow machine the last ones
        # may be made after `start`.
        expected = {
            rules.request_id(sid, start + timedelta(seconds=k))
            for sid, created in ids
            for k in range(SECONDS)
            if start + timedelta(seconds=k) >= created
        }
        assert len(expected) > SCHEDULES * SECONDS // 2
        engine = stack.app.schedules._engine
        j = t.jobs.c

        async def all_fired() -> int | None:
            # A pass admits its jobs before it commits its actions: wait for both.
            async with engine.connect() as s:
                n = (await s.execute(select(func.count()).where(j.schedule_id != ""))).scalar()
                done = (
                    await s.execute(select(func.count()).select_from(t.schedule_actions))
                ).scalar()
            return n if n is not None and min(n, done or 0) >= len(expected) else None

        await eventually(all_fired, SECONDS + 60, "every fire")
        async with engine.connect() as s:
            rows = (await s.execute(select(j.schedule_id, j.request_id))).all()
        made = Counter(r.request_id for r in rows)
        assert set(made) == expected  # none missed, none extra
        assert len(rows) == len(expected)
        # Each fire was fired by one replica (a second would record a second action, even
        # though the job's request id would have made it the same job).
        a = t.schedule_actions.c
        async with engine.connect() as s:
            actions = (await s.execute(select(a.schedule_id, a.schedule_time, a.skipped))).all()
        assert not any(x.skipped for x in actions)
        assert Counter((x.schedule_id, x.schedule_time) for x in actions).most_common(1)[0][1] == 1
        assert len(actions) == len(expected)
        assert stack.app.firer.passes > 1
        assert second.firer.passes > 1
    finally:
        await second.stop()


async def test_a_change_in_one_replica_wakes_the_others(stack) -> None:  # type: ignore[no-untyped-def]
    """The other replica sleeps up to a minute; only the NOTIFY can wake it in time."""
    await stack.app.firer.stop()
    second = App(
        stack.app.settings.model_copy(
            update={"port": 0, "metrics_port": 0, "schedule_idle_interval": 60}
        )
    )
    await second.start()
    try:

        async def asleep() -> bool | None:
            # It looked twice and found nothing due: at start, and when its listener began
            # (it looks once for changes it could have missed). Then it sleeps.
            return True if second.firer.looks >= 2 else None

        await eventually(asleep, 5, "the second replica's first looks")
        s = schedule_pb2.Schedule(
            display_name="woken",
            spec=schedule_pb2.ScheduleSpec(cron="* * * * * *"),
            job_template=job_spec_pb2.JobSpec(
                engine=job_spec_pb2.ENGINE_HTTP,
                steps=[
                    job_spec_pb2.Step(
                        name="p", request=job_spec_pb2.RequestStep(url="https://example.com/")
                    )
                ],
            ),
        )
        made = await stack.app.schedules.create("acme", "woken", s)  # through replica one

        async def fired() -> bool | None:
            got = await second.schedules.get("acme", made.schedule_id)
            return True if any(a.job_id for a in got.recent_actions) else None

        await eventually(fired, 15, "the sleeping replica to fire")
    finally:
        await second.stop()
