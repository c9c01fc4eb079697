"""`accord mcp` driven by the MCP SDK's own client over stdio, against the four services:
the tools it lists, a job created against a local site and watched to its result, a policy
dry run, the audit log, and calls the token's scopes refuse."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from accord_kit.testing import token
from tests.e2e.suite import Suite
from tests.e2e.test_one_job import TENANT, allow_local_site

pytestmark = pytest.mark.e2e
Connect = Callable[[str], AbstractAsyncContextManager[Client]]


@pytest.fixture
def connect(suite: Suite) -> Connect:
    """An `accord mcp` process over stdio, acting with the given token."""

    @asynccontextmanager
    async def started(bearer: str) -> AsyncIterator[Client]:
        env = {
            **os.environ,
            "ACCORD_ORCHESTRATOR": suite.target("orchestrator"),
            "ACCORD_POLICY": suite.target("policy"),
            "ACCORD_AUDIT": suite.target("audit"),
            "ACCORD_TOKEN": bearer,
        }
        server = StdioServerParameters(
            command=sys.executable, args=["-m", "accord_cli", "mcp"], env=env
        )
        async with Client(server, read_timeout_seconds=120) as client:
            yield client

    return started


def ok(result: CallToolResult) -> dict[str, Any]:
    """A tool's result that must not be an error."""
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def scrape(site: str) -> dict[str, Any]:
    return {
        "engine": "ENGINE_HTTP",
        "steps": [
            {"request": {"url": site}},
            {"name": "title", "extract": {"selector": "title"}},
        ],
    }


async def test_tools_run_a_job_and_refuse_what_the_token_may_not(
    connect: Connect, suite: Suite, site: str
) -> None:
    await allow_local_site(suite.target("policy"))
    async with connect(token(TENANT, subject="test:assistant")) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) >= {
            "create_job", "get_job", "list_jobs", "watch_job", "cancel_job", "retry_job",
            "create_schedule", "list_schedules", "pause_schedule", "resume_schedule",
            "trigger_schedule", "evaluate_job", "list_audit_records",
        }  # fmt: skip
        create = listed["create_job"]
        assert create.input_schema["properties"]["spec"] == {
            "$ref": "#/$defs/accord.common.v1.JobSpec",
            "description": "What the job does. Required.",
        }
        assert "jobs:write" in (create.description or "")
        assert "dry_run" not in listed["evaluate_job"].input_schema["properties"]

        made = await client.call_tool("create_job", {"spec": scrape(site)})
        assert not made.is_error, made.content
        job_id = made.structured_content["job"]["job_id"]
        watched = await client.call_tool("watch_job", {"job_id": job_id, "timeout_seconds": 90})
        assert not watched.is_error, watched.content
        result = watched.structured_content
        assert result["finished"] is True
        assert result["job"]["state"] == "JOB_STATE_SUCCEEDED"
        assert result["job"]["result"]["outputs"]["title"] == "Accord test site"
        assert result["changes"][-1]["state"] == "JOB_STATE_SUCCEEDED"

        judged = await client.call_tool("evaluate_job", {"spec": scrape("http://127.0.0.2:9/")})
        assert not judged.is_error, judged.content
        assert judged.structured_content["decision"]["outcome"] == "DECISION_OUTCOME_DENY"

        # The audit service consumes the job's events on its own; poll, bounded, for them.
        wanted = {f"accord.orchestrator.v1.job.{e}" for e in ("queued", "started", "succeeded")}
        seen_types: set[str] = set()
        for _ in range(100):
            records = await client.call_tool("list_audit_records", {"aggregate_id": job_id})
            assert not records.is_error, records.content
            found = records.structured_content.get("records", [])
            seen_types = {r["event_type"] for r in found}
            if wanted <= seen_types:
                break
            await asyncio.sleep(0.3)
        assert wanted <= seen_types, seen_types

        # A job not due for decades: watch gives up at its timeout; cancel ends it; a
        # cancelled job cannot be retried, and the refusal says why.
        later = {**scrape(site), "not_before_time": "2099-01-01T00:00:00Z"}
        queued = ok(await client.call_tool("create_job", {"spec": later}))["job"]["job_id"]
        waited = ok(await client.call_tool("watch_job", {"job_id": queued, "timeout_seconds": 1}))
        assert (waited["finished"], waited["job"]["state"]) == (False, "JOB_STATE_QUEUED")
        cancelled = ok(await client.call_tool("cancel_job", {"job_id": queued, "reason": "mcp"}))
        assert cancelled["job"]["state"] == "JOB_STATE_CANCELLED"
        again = await client.call_tool("retry_job", {"job_id": queued})
        assert again.is_error
        assert again.structured_content["code"] == "FAILED_PRECONDITION"

        schedule = {
            "display_name": "hourly",
            "spec": {"cron": "0 * * * *", "time_zone": "Europe/Berlin"},
            "job_template": scrape(site),
        }
        made_schedule = ok(await client.call_tool("create_schedule", {"schedule": schedule}))
        schedule_id = made_schedule["schedule"]["schedule_id"]
        paused = ok(await client.call_tool("pause_schedule", {"schedule_id": schedule_id}))
        assert paused["schedule"]["paused"] is True
        resumed = ok(await client.call_tool("resume_schedule", {"schedule_id": schedule_id}))
        assert resumed["schedule"].get("paused", False) is False
        fired = ok(await client.call_tool("trigger_schedule", {"schedule_id": schedule_id}))
        assert fired["job_id"]
        listed_schedules = ok(await client.call_tool("list_schedules", {}))
        assert [s["schedule_id"] for s in listed_schedules["schedules"]] == [schedule_id]

        bad = await client.call_tool("get_job", {"job_id": "not-a-uuid"})
        assert bad.is_error
        assert bad.structured_content["code"] == "INVALID_ARGUMENT"
        assert "job_id" in bad.structured_content["field_violations"]
        off_schema = await client.call_tool("create_job", {"spec": {"engine": "ENGINE_FAX"}})
        assert off_schema.is_error
        assert off_schema.structured_content["code"] == "INVALID_ARGUMENT"

    async with connect(token(TENANT, ["jobs:read"], subject="test:reader")) as reader:
        seen = await reader.call_tool("get_job", {"job_id": job_id})
        assert not seen.is_error, seen.content
        assert seen.structured_content["job"]["state"] == "JOB_STATE_SUCCEEDED"
        refused = await reader.call_tool("create_job", {"spec": scrape(site)})
        assert refused.is_error
        assert refused.structured_content["code"] == "PERMISSION_DENIED"
        schedules = await reader.call_tool("list_schedules", {})
        assert schedules.is_error
        assert schedules.structured_content["code"] == "PERMISSION_DENIED"
        listed_jobs = ok(await reader.call_tool("list_jobs", {"states": ["JOB_STATE_SUCCEEDED"]}))
        assert job_id in [j["job_id"] for j in listed_jobs["jobs"]]
