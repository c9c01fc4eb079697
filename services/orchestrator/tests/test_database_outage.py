"""PostgreSQL going away is a dependency outage, not a bug: calls answer UNAVAILABLE (which
clients retry as they are) rather than INTERNAL, and work again once it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from accord.orchestrator.v1 import job_service_pb2 as pb
from accord.orchestrator.v1 import job_service_pb2_grpc
from accord_kit.embedded import EmbeddedPostgres
from accord_kit.net import free_port
from accord_kit.testing import as_tenant, channel, error_info, refused
from accord_orchestrator.app import App, migrate
from accord_orchestrator.config import Settings

MD = as_tenant("acme")


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port())
    await asyncio.to_thread(pg.start)
    yield pg
    await asyncio.to_thread(pg.stop)


async def list_code(jobs: job_service_pb2_grpc.JobServiceStub) -> grpc.StatusCode:
    try:
        await jobs.ListJobs(pb.ListJobsRequest(), metadata=MD)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_calls_answer_unavailable_while_postgres_is_down(  # type: ignore[no-untyped-def]
    own_postgres: EmbeddedPostgres, nats_url: str
) -> None:
    settings = Settings(
        database_url=own_postgres.url,
        nats_url=nats_url,
        port=0,
        metrics_port=0,
        policy_target="127.0.0.1:1",  # not needed to read jobs
    )
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    try:
        async with channel(app.port) as ch:
            jobs = job_service_pb2_grpc.JobServiceStub(ch)
            assert list((await jobs.ListJobs(pb.ListJobsRequest(), metadata=MD)).jobs) == []
            await asyncio.to_thread(own_postgres.stop)
            err = await refused(jobs.ListJobs(pb.ListJobsRequest(), metadata=MD))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(err)["dependency"] == "postgres"
            await asyncio.to_thread(own_postgres.start)
            deadline = asyncio.get_running_loop().time() + 30
            while (code := await list_code(jobs)) != grpc.StatusCode.OK:
                assert code == grpc.StatusCode.UNAVAILABLE
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.2)
    finally:
        await app.stop()
