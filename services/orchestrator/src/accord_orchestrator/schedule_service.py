"""Schedule use cases: create, read, list, update, delete, pause, resume, trigger, backfill,
and one pass of firing what is due. Fires make jobs through JobUseCases, the same admission
path as CreateJob, with a request id per schedule and nominal time."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from google.protobuf import field_mask_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import job_pb2, schedule_pb2, schedule_service_pb2
from accord_kit import idempotency, metrics, outbox, pages
from accord_kit.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from accord_orchestrator import schedule_store as ss
from accord_orchestrator import schedule_views as views
from accord_orchestrator import store
from accord_orchestrator import tables as t
from accord_orchestrator.domain import calendars
from accord_orchestrator.domain import jobs as job_rules
from accord_orchestrator.domain import schedules as rules
from accord_orchestrator.service import JobUseCases

MAX_BACKFILL = 10_000
# Fires admitted per policy round trip (the policy's batch limit).
ADMIT_BATCH = 1000
Clock = Callable[[], datetime]
BUFFERED = "buffered: fires when the previous job ends"
# Answers kept for repeats of a request id (idempotency.recall / keep).
TRIGGERED = schedule_service_pb2.TriggerScheduleResponse
BACKFILLED = schedule_service_pb2.BackfillScheduleResponse
DELETED = schedule_service_pb2.DeleteScheduleResponse


class ScheduleUseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        jobs: JobUseCases,
        on_change: Callable[[], None] = lambda: None,
        clock: Clock = store.utcnow,
    ) -> None:
        self._engine = engine
        self._jobs = jobs
        self._on_change = on_change
        self._clock = clock

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    def clock(self) -> datetime:
        return self._clock()

    def with_clock(self, clock: Clock) -> ScheduleUseCases:
        """The same use cases on another clock (tests and benchmarks simulate time)."""
        return ScheduleUseCases(self._engine, self._jobs, self._on_change, clock)

    async def create(
        self, tenant: str, request_id: str, schedule: schedule_pb2.Schedule
    ) -> schedule_pb2.Schedule:
        now = self._clock()
        body = views.definition(schedule)
        calendar = views.checked(body, now)
        digest = hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()
        async with self._engine.begin() as s:
            await idempotency.claim(s, "schedule.create", tenant, request_id)
            earlier = await ss.by_request(s, tenant, request_id)
            if earlier is not None:
                if earlier.body_hash != digest:
                    raise AlreadyExists(
                        "request_id was already used with a different schedule",
                        metadata={"schedule_id": earlier.schedule_id},
                    )
                return await self._view(s, earlier)
            stored = await self.insert(s, tenant, request_id, body, digest, calendar, now)
            found = await self._view(s, stored)
        self._on_change()
        return found

    async def insert(
        self,
        s: AsyncConnection,
        tenant: str,
        request_id: str,
        body: schedule_pb2.Schedule,
        digest: str,
        calendar: calendars.Calendar,
        now: datetime,
    ) -> ss.Stored:
        """Store a new, checked schedule in the caller's transaction (a workflow creates its
        schedule with itself); the caller calls `changed` once it commits."""
        if await ss.name_taken(s, tenant, body.display_name):
            raise AlreadyExists(f"a schedule named {body.display_name!r} exists")
        schedule_id = str(uuid.uuid4())
        next_time = calendars.next_after(calendar, now - timedelta(microseconds=1))
        row = views.new_row(schedule_id, tenant, request_id, body, digest, next_time, now)
        try:
            await ss.insert_schedule(s, row)
        except IntegrityError:  # a concurrent create with this name won
            raise AlreadyExists(f"a schedule named {body.display_name!r} exists") from None
        stored = await _existing(s, tenant, schedule_id)
        await views.changed(s, stored, "created")
        return stored

    async def redefine(
        self,
        s: AsyncConnection,
        tenant: str,
        schedule_id: str,
        spec: schedule_pb2.ScheduleSpec,
        template: job_spec_pb2.JobSpec,
        now: datetime,
    ) -> None:
        """Give a schedule a new calendar and job template in the caller's transaction (a
        workflow's update; the caller checked the calendar). A new calendar counts from
        now, as UpdateSchedule's does; the caller calls `changed` once it commits."""
        current = await _existing(s, tenant, schedule_id, lock=True)
        body = schedule_pb2.Schedule()
        body.CopyFrom(current.schedule)
        body.spec.CopyFrom(spec)
        body.job_template.CopyFrom(template)
        fields = [
            name
            for name in ("spec", "job_template")
            if getattr(body, name) != getattr(current.schedule, name)
        ]
        if not fields:
            return
        values: dict[str, Any] = {
            "body": body.SerializeToString(deterministic=True),
            "etag": uuid.uuid4().hex,
            "update_time": now,
        }
        if "spec" in fields:
            next_time = calendars.next_after(views.checked(body, current.create_time), now)
            values["next_time"] = next_time
            values["due_time"] = rules.due_time(
                schedule_id, next_time, current.state.buffered_time, views.jitter(body), now
            )
        await ss.save(s, schedule_id, **values)
        await views.changed(s, await _existing(s, tenant, schedule_id), "updated", fields)

    def changed(self) -> None:
        """Wake the firing loops: a schedule was stored or removed by another use case."""
        self._on_change()

    async def get(self, tenant: str, schedule_id: str) -> schedule_pb2.Schedule:
        async with self._engine.connect() as s:
            return await self._view(s, await _existing(s, tenant, schedule_id))

    async def list_schedules(
        self, tenant: str, request: schedule_service_pb2.ListSchedulesRequest
    ) -> tuple[list[schedule_pb2.Schedule], str]:
        paused = request.paused if request.HasField("paused") else None
        labels = dict(request.labels)
        filters = [tenant, paused, sorted(labels.items())]
        limit = pages.page_size(request.page_size)
        position = pages.decode(request.page_token, filters, shape=(pages.TIME, pages.UUID))
        async with self._engine.connect() as s:
            found = await ss.list_schedules(s, tenant, paused, labels, position, limit + 1)
            views = await self._views(s, found[:limit])
        if len(found) <= limit:
            return views, ""
        last = found[limit - 1]
        return views, pages.encode([last.create_time.isoformat(), last.schedule_id], filters)

    async def update(
        self,
        tenant: str,
        schedule: schedule_pb2.Schedule,
        mask: field_mask_pb2.FieldMask,
        asked: idempotency.Asked | None = None,
    ) -> schedule_pb2.Schedule:
        paths = views.mask(schedule, mask)
        now = self._clock()
        async with self._engine.begin() as s:
            done = await idempotency.recall(
                s, t.outcomes, "schedule.update", tenant, asked, schedule_pb2.Schedule
            )
            if done is not None:
                return done
            current = await _existing(s, tenant, schedule.schedule_id, lock=True)
            if schedule.etag != current.etag:
                raise Aborted(
                    "etag is stale; read the schedule again", metadata={"etag": current.etag}
                )
            body = schedule_pb2.Schedule()
            body.CopyFrom(current.schedule)
            mask.MergeMessage(
                schedule, body, replace_message_field=True, replace_repeated_field=True
            )
            if "labels" in paths:  # a map merges by key; an update replaces it
                body.ClearField("labels")
                body.labels.update(schedule.labels)
            body = views.definition(body)
            calendar = views.checked(body, current.create_time)
            if body.display_name != current.schedule.display_name and await ss.name_taken(
                s, tenant, body.display_name, current.schedule_id
            ):
                raise AlreadyExists(f"a schedule named {body.display_name!r} exists")
            values: dict[str, Any] = {
                "display_name": body.display_name,
                "body": body.SerializeToString(deterministic=True),
                "labels": dict(body.labels),
                "etag": uuid.uuid4().hex,
                "update_time": now,
            }
            if any(p.split(".")[0] == "spec" for p in paths):  # a new calendar from now on
                next_time = calendars.next_after(calendar, now)
                values["next_time"] = next_time
                values["due_time"] = rules.due_time(
                    current.schedule_id,
                    next_time,
                    current.state.buffered_time,
                    views.jitter(body),
                    now,
                )
            await ss.save(s, current.schedule_id, **values)
            stored = await _existing(s, tenant, current.schedule_id)
            await views.changed(s, stored, "updated", sorted(paths))
            found = await self._view(s, stored)
            await idempotency.keep(s, t.outcomes, "schedule.update", tenant, asked, found)
        self._on_change()
        return found

    async def delete(
        self, tenant: str, schedule_id: str, etag: str = "", asked: idempotency.Asked | None = None
    ) -> None:
        async with self._engine.begin() as s:
            if (
                await idempotency.recall(s, t.outcomes, "schedule.delete", tenant, asked, DELETED)
                is not None
            ):
                return
            current = await _existing(s, tenant, schedule_id, lock=True)
            if etag and etag != current.etag:
                raise Aborted(
                    "etag is stale; read the schedule again", metadata={"etag": current.etag}
                )
            await ss.delete_schedule(s, schedule_id)
            await views.changed(s, current, "deleted")
            await idempotency.keep(s, t.outcomes, "schedule.delete", tenant, asked, DELETED())
        self._on_change()

    async def pause(
        self, tenant: str, schedule_id: str, note: str, asked: idempotency.Asked | None = None
    ) -> schedule_pb2.Schedule:
        return await self._set_paused(tenant, schedule_id, True, note, asked)

    async def resume(
        self, tenant: str, schedule_id: str, asked: idempotency.Asked | None = None
    ) -> schedule_pb2.Schedule:
        return await self._set_paused(tenant, schedule_id, False, "", asked)

    async def _set_paused(
        self,
        tenant: str,
        schedule_id: str,
        paused: bool,
        note: str,
        asked: idempotency.Asked | None,
    ) -> schedule_pb2.Schedule:
        scope = "schedule.pause" if paused else "schedule.resume"
        async with self._engine.begin() as s:
            done = await idempotency.recall(
                s, t.outcomes, scope, tenant, asked, schedule_pb2.Schedule
            )
            if done is not None:
                return done
            found = await self._view(s, await self.set_paused(s, tenant, schedule_id, paused, note))
            await idempotency.keep(s, t.outcomes, scope, tenant, asked, found)
        self._on_change()
        return found

    async def set_paused(
        self, s: AsyncConnection, tenant: str, schedule_id: str, paused: bool, note: str
    ) -> ss.Stored:
        """Pause or resume in the caller's transaction (a workflow pauses its schedule with
        itself); the caller calls `changed` once it commits."""
        current = await _existing(s, tenant, schedule_id, lock=True)
        if current.paused != paused:
            await ss.save(
                s,
                schedule_id,
                paused=paused,
                pause_note=note,
                etag=uuid.uuid4().hex,
                update_time=self._clock(),
            )
            current = await _existing(s, tenant, schedule_id)
            await views.changed(s, current, "paused" if paused else "resumed")
        return current

    async def trigger(
        self,
        tenant: str,
        schedule_id: str,
        request_id: str,
        policy: int,
        asked: idempotency.Asked | None = None,
    ) -> TRIGGERED:
        """Fire now, outside the calendar; the same request id returns the same job (and,
        within the outcomes' retention, the first answer, once `asked` is passed)."""
        key = f"schedule:{schedule_id}:trigger:{request_id}"
        async with self._engine.begin() as s:
            done = await idempotency.recall(
                s, t.outcomes, "schedule.trigger", tenant, asked, TRIGGERED
            )
            if done is not None:
                return done
            current = await _existing(s, tenant, schedule_id, lock=True)
            earlier = await store.find_by_requests(s, tenant, [key])
            if key in earlier:  # the key outlives the outcome's retention
                job = earlier[key]
                action = views.action(self._clock(), job.create_time, "trigger", job)
                return TRIGGERED(job_id=job.job_id, action=action)
            now = self._clock()
            running = await _running(s, current)
            plan = rules.sequence(
                [now],
                policy=policy or current.schedule.overlap_policy,
                running=running,
                buffered=current.state.buffered_time,
                note="trigger",
            )
            plan.fires = [rules.Fire(f.schedule_time, f.note, f.cancel, key) for f in plan.fires]
            plan.next_time = current.state.next_time
            taken = (await self._execute(s, [(current, plan)], now)).get(schedule_id)
            if taken:
                found = TRIGGERED(job_id=taken[0].job_id, action=taken[0])
            else:  # buffered: it fires when the running job ends
                found = TRIGGERED(action=views.action(now, now, BUFFERED))
                found.action.skipped = False
            await idempotency.keep(s, t.outcomes, "schedule.trigger", tenant, asked, found)
        self._on_change()
        return found

    async def backfill(
        self,
        tenant: str,
        schedule_id: str,
        start: datetime,
        end: datetime,
        policy: int,
        asked: idempotency.Asked | None = None,
    ) -> BACKFILLED:
        """Fire the calendar's times in [start, end); a repeat of `asked`'s request id
        returns the first answer and creates nothing (and each fire's job has a request id
        of its schedule and time, so the same fire never makes two jobs)."""
        now = self._clock()
        if end <= start or end > now:
            raise InvalidArgument(
                "the range is invalid",
                [FieldViolation("end_time", "must be after start_time and not in the future")],
            )
        async with self._engine.begin() as s:
            done = await idempotency.recall(
                s, t.outcomes, "schedule.backfill", tenant, asked, BACKFILLED
            )
            if done is not None:
                return done
            current = await _existing(s, tenant, schedule_id, lock=True)
            calendar = rules.backfill_calendar(current.schedule, current.create_time, start)
            times = calendars.between(calendar, start, end, MAX_BACKFILL)
            if len(times) > MAX_BACKFILL:
                raise InvalidArgument(
                    "the range holds too many fires",
                    [FieldViolation("end_time", f"the range may hold at most {MAX_BACKFILL}")],
                )
            plan = rules.sequence(
                times,
                policy=policy or current.schedule.overlap_policy,
                running=await _running(s, current),
                buffered=current.state.buffered_time,
                note="backfill",
            )
            plan.next_time = current.state.next_time
            actions = sorted(
                (await self._execute(s, [(current, plan)], now)).get(schedule_id, []),
                key=lambda a: a.schedule_time.ToDatetime(),
            )
            found = BACKFILLED(job_ids=[a.job_id for a in actions if a.job_id], actions=actions)
            await idempotency.keep(s, t.outcomes, "schedule.backfill", tenant, asked, found)
        self._on_change()
        return found

    async def fire_due(
        self, limit: int = 500, claimed: Callable[[list[str]], None] = lambda _: None
    ) -> int:
        """One pass: claim due schedules no other pass holds and fire them; `claimed` hears
        which ids this pass holds as soon as it holds them. Returns how many it claimed (a
        full batch means more may be due)."""
        now = self._clock()
        async with self._engine.begin() as s:
            due = await ss.claim_due(s, now, limit)
            claimed([d.schedule_id for d in due])
            if not due:
                return 0
            # Only the overlap policy (or a buffered fire) asks whether the last job runs.
            asks = [
                d.state.last_job_id
                for d in due
                if rules.policy_of(d.schedule.overlap_policy) != rules.ALLOW_ALL
                or d.state.buffered_time is not None
            ]
            states = await ss.job_states(s, asks)
            plans = []
            for d in due:
                last = states.get(d.state.last_job_id)
                plans.append(
                    (
                        d,
                        rules.plan(
                            d.state,
                            rules.calendar_of(d.schedule, d.create_time),
                            now=now,
                            running=last is not None and last not in job_rules.TERMINAL,
                            policy=d.schedule.overlap_policy,
                            catchup=rules.catchup_of(d.schedule),
                        ),
                    )
                )
            await self._execute(s, plans, now)
        metrics.observe_fire_lag(now, [f.schedule_time for _, p in plans for f in p.fires])
        return len(due)

    async def next_due(self, besides: Sequence[str] = ()) -> datetime | None:
        """When the next schedule is due, passing over those passes in flight hold."""
        async with self._engine.connect() as s:
            return await ss.earliest_due(s, besides)

    async def _execute(
        self, s: AsyncConnection, plans: Sequence[tuple[ss.Stored, rules.Plan]], now: datetime
    ) -> dict[str, list[schedule_pb2.ScheduleAction]]:
        """Carry out plans of locked schedules: cancel, admit the fires' jobs (batched per
        tenant), record actions and events, store the new firing state."""
        for d, plan in plans:
            if any(f.cancel for f in plan.fires) and d.state.last_job_id:
                await self._cancel(d.state.tenant_id, d.state.last_job_id)
        made = await self._admit(plans)
        actions: dict[str, list[schedule_pb2.ScheduleAction]] = {}
        rows, saves, envelopes = [], [], []
        for d, plan in plans:
            last_job = d.state.last_job_id
            taken = []
            for skip in plan.skips:
                taken.append(views.action(skip.schedule_time, now, skip.note, count=skip.count))
            for fire in plan.fires:
                job = made[fire.request_id or rules.request_id(d.schedule_id, fire.schedule_time)]
                taken.append(views.action(fire.schedule_time, now, fire.note, job))
                last_job = job.job_id
            taken.sort(key=lambda a: a.schedule_time.ToDatetime())
            actions[d.schedule_id] = taken
            rows += [views.action_row(d.schedule_id, a) for a in taken]
            envelopes += [views.fired(d, a) for a in taken]
            saves.append(
                {
                    "key": d.schedule_id,
                    "next_time": plan.next_time,
                    "due_time": rules.due_time(
                        d.schedule_id,
                        plan.next_time,
                        plan.buffered_time,
                        views.jitter(d.schedule),
                        now,
                    ),
                    "buffered_time": plan.buffered_time,
                    "last_job_id": last_job,
                }
            )
        await ss.insert_actions(s, rows)
        await ss.save_many(s, saves)
        await outbox.enqueue(s, t.outbox, *envelopes)
        return actions

    async def _admit(self, plans: Sequence[tuple[ss.Stored, rules.Plan]]) -> dict[str, job_pb2.Job]:
        by_tenant: dict[str, list[tuple[str, job_spec_pb2.JobSpec, str]]] = {}
        for d, plan in plans:
            for fire in plan.fires:
                key = fire.request_id or rules.request_id(d.schedule_id, fire.schedule_time)
                by_tenant.setdefault(d.state.tenant_id, []).append(
                    (key, d.schedule.job_template, d.schedule_id)
                )
        made: dict[str, job_pb2.Job] = {}
        for tenant, fires in by_tenant.items():
            for i in range(0, len(fires), ADMIT_BATCH):
                made |= await self._jobs.create_scheduled(tenant, fires[i : i + ADMIT_BATCH])
        return made

    async def _cancel(self, tenant: str, job_id: str) -> None:
        # It may have finished (or been pruned) meanwhile.
        with contextlib.suppress(FailedPrecondition, NotFound):
            await self._jobs.cancel(tenant, job_id, "cancelled by a later fire of its schedule")

    async def _view(self, s: AsyncConnection, stored: ss.Stored) -> schedule_pb2.Schedule:
        return (await self._views(s, [stored]))[0]

    async def _views(
        self, s: AsyncConnection, found: Sequence[ss.Stored]
    ) -> list[schedule_pb2.Schedule]:
        recent = await ss.recent_actions(s, [d.schedule_id for d in found], rules.SHOWN)
        return [views.to_schedule(d, recent.get(d.schedule_id, [])) for d in found]


async def _existing(
    s: AsyncConnection, tenant: str, schedule_id: str, *, lock: bool = False
) -> ss.Stored:
    found = await ss.get(s, tenant, schedule_id, lock=lock)
    if found is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return found


async def _running(s: AsyncConnection, d: ss.Stored) -> bool:
    state = (await ss.job_states(s, [d.state.last_job_id])).get(d.state.last_job_id)
    return state is not None and state not in job_rules.TERMINAL
