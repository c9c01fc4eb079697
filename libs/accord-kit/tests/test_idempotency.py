"""Kept outcomes on a real PostgreSQL: a repeat gets the first answer, a reused id with
another request is ALREADY_EXISTS, an expired outcome frees its id, and concurrent repeats
do the work once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from accord.orchestrator.v1 import job_pb2
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord_kit import db, idempotency
from accord_kit.errors import AlreadyExists

META = db.metadata("kit_outcomes")
OUTCOMES = idempotency.outcomes_table(META)
JOB = "0b4c1f2e-6d5a-4e3b-9c8d-7f6e5d4c3b2a"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database_url)
    async with engine.begin() as s:
        await s.execute(text("CREATE SCHEMA kit_outcomes"))
        await s.run_sync(META.create_all)
    yield engine
    await engine.dispose()


async def cancel(engine: AsyncEngine, request: pb.CancelJobRequest, work: list[str]) -> job_pb2.Job:
    """A use case as the services write one: recall, else work and keep, one transaction."""
    async with engine.begin() as s:
        done = await idempotency.recall(s, OUTCOMES, "job.cancel", "acme", request, job_pb2.Job)
        if done is not None:
            return done
        work.append(request.job_id)
        await asyncio.sleep(0.05)  # a slow change: concurrent repeats must wait for it
        found = job_pb2.Job(job_id=request.job_id, version=len(work))
        await idempotency.keep(s, OUTCOMES, "job.cancel", "acme", request, found)
        return found


async def test_a_repeat_gets_the_first_answer_and_another_request_is_refused(engine) -> None:  # type: ignore[no-untyped-def]
    work: list[str] = []
    request = pb.CancelJobRequest(job_id=JOB, reason="stop", request_id="c1")
    answers = await asyncio.gather(*(cancel(engine, request, work) for _ in range(10)))
    assert work == [JOB]
    assert all(a == answers[0] for a in answers)
    request.reason = "another"
    with pytest.raises(AlreadyExists):
        await cancel(engine, request, work)
    async with engine.begin() as s:  # another tenant's ids are its own
        assert (
            await idempotency.recall(s, OUTCOMES, "job.cancel", "other", request, job_pb2.Job)
            is None
        )
    without = pb.CancelJobRequest(job_id=JOB, reason="stop")
    await cancel(engine, without, work)
    await cancel(engine, without, work)
    assert len(work) == 3  # no request id: no idempotency


async def test_an_expired_outcome_frees_its_id_and_is_pruned(engine) -> None:  # type: ignore[no-untyped-def]
    work: list[str] = []
    request = pb.CancelJobRequest(job_id=JOB, request_id="old")
    await cancel(engine, request, work)
    await cancel(engine, pb.CancelJobRequest(job_id=JOB, request_id="other"), work)
    long_ago = datetime.now(UTC) - idempotency.RETENTION * 2
    async with engine.begin() as s:
        await s.execute(update(OUTCOMES).values(create_time=long_ago))
    again = await cancel(engine, request, work)  # expired: done afresh, kept anew
    assert work == [JOB, JOB, JOB]
    assert again.version == 3
    async with engine.connect() as s:
        left = await s.execute(
            select(OUTCOMES.c.request_id, func.count()).group_by(OUTCOMES.c.request_id)
        )
        assert dict(left.all()) == {"old": 1}  # "other" expired and went with the next keep
