"""ScheduleService servicer: map each request to one use case and back."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc

from accord.orchestrator.v1 import schedule_service_pb2 as sched
from accord.orchestrator.v1 import schedule_service_pb2_grpc
from accord_kit import caller
from accord_orchestrator.schedule_service import ScheduleUseCases

Ctx = grpc.aio.ServicerContext[Any, Any]


class ScheduleApi(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, cases: ScheduleUseCases) -> None:
        self._cases = cases

    async def CreateSchedule(
        self, request: sched.CreateScheduleRequest, context: Ctx
    ) -> sched.CreateScheduleResponse:
        found = await self._cases.create(caller.tenant(), request.request_id, request.schedule)
        return sched.CreateScheduleResponse(schedule=found)

    async def GetSchedule(
        self, request: sched.GetScheduleRequest, context: Ctx
    ) -> sched.GetScheduleResponse:
        found = await self._cases.get(caller.tenant(), request.schedule_id)
        return sched.GetScheduleResponse(schedule=found)

    async def ListSchedules(
        self, request: sched.ListSchedulesRequest, context: Ctx
    ) -> sched.ListSchedulesResponse:
        found, token = await self._cases.list_schedules(caller.tenant(), request)
        return sched.ListSchedulesResponse(schedules=found, next_page_token=token)

    async def UpdateSchedule(
        self, request: sched.UpdateScheduleRequest, context: Ctx
    ) -> sched.UpdateScheduleResponse:
        found = await self._cases.update(
            caller.tenant(), request.schedule, request.update_mask, request
        )
        return sched.UpdateScheduleResponse(schedule=found)

    async def DeleteSchedule(
        self, request: sched.DeleteScheduleRequest, context: Ctx
    ) -> sched.DeleteScheduleResponse:
        await self._cases.delete(caller.tenant(), request.schedule_id, request.etag, request)
        return sched.DeleteScheduleResponse()

    async def PauseSchedule(
        self, request: sched.PauseScheduleRequest, context: Ctx
    ) -> sched.PauseScheduleResponse:
        found = await self._cases.pause(caller.tenant(), request.schedule_id, request.note, request)
        return sched.PauseScheduleResponse(schedule=found)

    async def ResumeSchedule(
        self, request: sched.ResumeScheduleRequest, context: Ctx
    ) -> sched.ResumeScheduleResponse:
        found = await self._cases.resume(caller.tenant(), request.schedule_id, request)
        return sched.ResumeScheduleResponse(schedule=found)

    async def TriggerSchedule(
        self, request: sched.TriggerScheduleRequest, context: Ctx
    ) -> sched.TriggerScheduleResponse:
        return await self._cases.trigger(
            caller.tenant(),
            request.schedule_id,
            request.request_id,
            request.overlap_policy,
            request,
        )

    async def BackfillSchedule(
        self, request: sched.BackfillScheduleRequest, context: Ctx
    ) -> sched.BackfillScheduleResponse:
        return await self._cases.backfill(
            caller.tenant(),
            request.schedule_id,
            request.start_time.ToDatetime(tzinfo=UTC),
            request.end_time.ToDatetime(tzinfo=UTC),
            request.overlap_policy,
            request,
        )
