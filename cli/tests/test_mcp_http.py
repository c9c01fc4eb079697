"""`accord mcp --transport http`: the same tools over streamable HTTP, reached by the SDK's
own client. No Accord service runs here: listing needs none, and arguments off the schema
are refused before any call."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from mcp import Client

from accord_kit.net import accepts_connections, free_port


@pytest.fixture
async def mcp_url() -> AsyncIterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "accord_cli", "mcp", "--transport", "http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # Up to 60 s for the interpreter and the imports, on a machine that may be busy.
        deadline = asyncio.get_running_loop().time() + 60
        while not accepts_connections("127.0.0.1", port):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert asyncio.get_running_loop().time() < deadline, "accord mcp never listened"
            await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_tools_over_streamable_http(mcp_url: str) -> None:
    async with Client(mcp_url, read_timeout_seconds=30) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "watch_job" in tools
        assert tools["watch_job"].input_schema["properties"]["timeout_seconds"]["maximum"] == 600
        refused = await client.call_tool("get_job", {"job": "x"})
        # A schema cannot check a time's calendar; the message parser can.
        bad_time = await client.call_tool("list_jobs", {"create_time_after": "2026-13-45T99:00Z"})
    assert bad_time.is_error
    assert bad_time.structured_content["code"] == "INVALID_ARGUMENT"
    assert bad_time.structured_content["message"].endswith("the request message")
    assert refused.is_error
    assert refused.structured_content["code"] == "INVALID_ARGUMENT"
    assert "'job' was unexpected" in refused.structured_content["field_violations"]["(arguments)"]
