"""Requests that cannot hurt the next job: bad headers and URLs refused at submission, and
a connection that ended badly never handed to another job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web

from accord.common.v1 import job_spec_pb2 as js
from accord.executor.v1 import executor_service_pb2 as pb
from accord_executor.domain import results as r
from accord_executor.engines.http import HttpEngine
from accord_kit.testing import field_violations

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"


def step(url: str, **headers: str) -> js.Step:
    return js.Step(request=js.RequestStep(url=url, headers=headers))


@pytest.mark.parametrize(
    ("request_step", "field"),
    [
        (step("http://127.0.0.1/", **{"Content-Length": "100"}), "spec.steps[0].request.headers"),
        (
            step("http://127.0.0.1/", **{"transfer-encoding": "chunked"}),
            "spec.steps[0].request.headers",
        ),
        (step("http://127.0.0.1/", Host="other.test"), "spec.steps[0].request.headers"),
        (step("http://127.0.0.1/", Connection="close"), "spec.steps[0].request.headers"),
        (step("http://127.0.0.1/", **{"X-A": "1\r\nX-B: 2"}), "spec.steps[0].request.headers[X-A]"),
        (step("http://127.0.0.1/", **{"X-A": "1\n"}), "spec.steps[0].request.headers[X-A]"),
        (step("http://127.0.0.1/", **{"Bad Name": "1"}), "spec.steps[0].request.headers[Bad Name]"),
        (step("http://127.0.0.1/", **{"X:Y": "1"}), "spec.steps[0].request.headers[X:Y]"),
        (step("http://[::1"), "spec.steps[0].request.url"),
        (step("http://127.0.0.1:99999/"), "spec.steps[0].request.url"),
        (step("http://127.0.0.1:0/"), "spec.steps[0].request.url"),
        (step("ftp://127.0.0.1/"), "spec.steps[0].request.url"),
        (step("http://a b/"), "spec.steps[0].request.url"),
    ],
)
async def test_bad_headers_and_urls_are_refused_at_submission(  # type: ignore[no-untyped-def]
    executor, site, request_step: js.Step, field: str
) -> None:
    spec = js.JobSpec(engine=js.ENGINE_HTTP, steps=[request_step])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        [m async for m in executor.RunJob(pb.RunJobRequest(spec=spec))]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err.value)
    assert site.hits == []


@pytest.fixture
async def liar() -> AsyncIterator[tuple[str, set[int]]]:
    """A server whose /liar promises 1000 bytes, sends 5 and keeps the connection open."""
    peers: set[int] = set()

    async def any_path(request: web.Request) -> web.StreamResponse:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peers.add(peername[1] if peername else 0)
        if request.path == "/liar":
            response = web.StreamResponse(headers={"Content-Length": "1000"})
            await response.prepare(request)
            await response.write(b"hello")
            await asyncio.sleep(30)  # cancelled when the client goes away or at cleanup
            return response
        return web.Response(text="<title>fine</title>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_path)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", peers
    await runner.cleanup()


async def test_a_connection_left_mid_body_is_not_reused(liar: tuple[str, set[int]]) -> None:
    url, peers = liar
    # One connection in the pool: had the poisoned one gone back, the next job would wait.
    engine = HttpEngine(concurrency=1, user_agent=USER_AGENT)
    await engine.start()
    try:
        poisoned = js.JobSpec(engine=js.ENGINE_HTTP, steps=[step(f"{url}/liar")])
        poisoned.steps[0].timeout.FromMilliseconds(300)
        first = await engine.run(poisoned)
        assert first.failure is not None
        assert first.failure.code == r.TIMEOUT
        started = time.monotonic()
        second = await engine.run(js.JobSpec(engine=js.ENGINE_HTTP, steps=[step(f"{url}/")]))
        assert second.failure is None
        assert time.monotonic() - started < 5  # not the liar's 30 s
        assert len(peers) == 2  # a fresh connection, not the poisoned one
    finally:
        await engine.close()


async def test_a_rendered_header_with_a_newline_is_refused_before_sending(  # type: ignore[no-untyped-def]
    engine: HttpEngine, site
) -> None:
    spec = js.JobSpec(
        engine=js.ENGINE_HTTP,
        steps=[
            js.Step(name="v", request=js.RequestStep(url=f"{site.url}/")),
            # The home page's body has newlines: rendered into a header, it would split it.
            js.Step(
                request=js.RequestStep(
                    url=f"{site.url}/echo", headers={"X-Token": "{{ steps.v.body }}"}
                )
            ),
        ],
    )
    outcome = await engine.run(spec)
    assert outcome.failure is not None
    assert outcome.failure.code == r.TEMPLATE_ERROR
    assert "X-Token" in outcome.failure.message
    assert site.hits == ["/"]
