"""The browser engine against real Chromium, a real policy service and a local site.

Every request the page makes goes through the policing proxy; the canary on 127.0.0.2,
which no tenant's policy allows, logs whatever reaches it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from google.protobuf import duration_pb2, json_format

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord_executor.artifacts import LocalArtifactStore
from accord_executor.config import Settings
from accord_executor.domain import results as r
from accord_executor.engines import browser_steps, chromium
from accord_executor.engines.browser_engine import BrowserEngine
from accord_executor.engines.chromium import BrowserHost
from accord_executor.engines.guard import Guard
from accord_executor.engines.proxy import PolicingProxy
from accord_kit.policy import PolicyClient
from accord_policy.app import App as PolicyApp

from .browser_site import Sites, sites_fixture  # noqa: F401 - the fixture

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"
SUCCEEDED = job_result_pb2.STEP_STATUS_SUCCEEDED
FAILED = job_result_pb2.STEP_STATUS_FAILED
SKIPPED = job_result_pb2.STEP_STATUS_SKIPPED


class Engine:
    """A browser engine whose every request is checked by the real policy service."""

    def __init__(self, engine: BrowserEngine, host: BrowserHost, store: LocalArtifactStore):
        self.engine, self.host, self.store = engine, host, store

    async def run(self, *steps: js.Step, tenant: str = "acme", **fields: object):  # type: ignore[no-untyped-def]
        spec = js.JobSpec(engine=js.ENGINE_BROWSER, steps=steps, **fields)  # type: ignore[arg-type]
        return await self.engine.run(spec, tenant=tenant, job_id=str(uuid.uuid4()))


@pytest.fixture
async def make_engine(
    policy_app: PolicyApp, nats_url: str, chromium_path: str, tmp_path: Path
) -> AsyncIterator[Callable[..., asyncio.Future[Engine]]]:
    made: list[tuple[BrowserHost, PolicingProxy, PolicyClient]] = []

    async def make(**host_options: object) -> Engine:
        client = PolicyClient(
            f"127.0.0.1:{policy_app.port}", 2.0, Settings(nats_url=nats_url, port=0, metrics_port=0)
        )
        proxy = PolicingProxy(Guard(client))
        host = BrowserHost(
            chromium_path,
            proxy_port=await proxy.start(),
            user_agent=USER_AGENT,
            **host_options,  # type: ignore[arg-type]
        )
        await host.start()
        made.append((host, proxy, client))
        store = LocalArtifactStore(tmp_path / "artifacts")
        return Engine(BrowserEngine(host, proxy, store), host, store)

    yield make  # type: ignore[misc]
    for host, proxy, client in made:
        await host.close()
        await proxy.close()
        await client.close()


@pytest.fixture
async def engine(make_engine) -> Engine:  # type: ignore[no-untyped-def]
    made: Engine = await make_engine()
    return made


def go(url: str, name: str = "") -> js.Step:
    return js.Step(name=name, request=js.RequestStep(url=url))


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(value * 1000))
    return d


async def test_requests_to_a_refused_host_are_blocked_and_reported(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        go(f"{sites.url}/leaky"),
        js.Step(wait_for=js.WaitForStep(network_idle=True)),
        js.Step(name="status", extract=js.ExtractStep(selector="#status")),
        js.Step(name="ws", extract=js.ExtractStep(selector="body", attribute="data-ws")),
    )
    assert outcome.failure is None, outcome.failure
    assert outcome.result.outputs["status"] == "blocked"  # the page's fetch failed
    refused = {q.url: q for q in outcome.result.requests if not q.sent}
    assert outcome.result.outputs["ws"] == "blocked"  # the WebSocket never opened
    canary = sites.canary_url.removeprefix("http://")
    # The WebSocket's CONNECT is checked on its host and port; an HTTPS request on its full
    # URL, before Chromium opens any tunnel for it.
    assert set(refused) == {
        f"{sites.canary_url}/pixel.png",
        f"{sites.canary_url}/api",
        f"https://{canary}/",
        f"https://{canary}/secure?q=1",
    }
    for record in refused.values():
        assert record.reasons
        assert record.decision_id
        assert not record.address
    sent = [q for q in outcome.result.requests if q.sent]
    assert sent[0].url == f"{sites.url}/leaky"
    assert sent[0].http_status == 200
    assert {q.address for q in sent} == {"127.0.0.1"}  # the page, and Chromium's favicon

    # A navigation that redirects to the canary fails the step, for good, naming the URL.
    redirected = await engine.run(go(f"{sites.url}/to-canary"))
    assert redirected.failure is not None
    assert redirected.failure.code == r.POLICY_DENIED
    assert not redirected.failure.retryable
    assert f"{sites.canary_url}/landing" in redirected.failure.message
    assert "step 0 (request)" in redirected.result.steps[0].error_message
    # And a page loaded straight from the canary, too.
    direct = await engine.run(go(f"{sites.canary_url}/page"))
    assert direct.failure is not None
    assert direct.failure.code == r.POLICY_DENIED
    assert sites.canary_hits == []  # the canary's own log: nothing ever arrived


async def test_jobs_of_two_tenants_share_no_cookie_or_storage(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    seen = js.Step(name="seen", extract=js.ExtractStep(selector="#seen"))
    first = await engine.run(go(f"{sites.url}/storage?who=acme"), tenant="acme")
    assert first.failure is None, first.failure
    # The same tenant's next job is a fresh context too; then another tenant's.
    for tenant in ("acme", "globex"):
        second = await engine.run(go(f"{sites.url}/storage"), seen, tenant=tenant)
        assert second.failure is None, second.failure
        assert second.result.outputs["seen"] == '{"cookie":"","local":null,"session":null}'
    # The first job did set them, so the check above could have failed.
    again = await engine.run(
        go(f"{sites.url}/storage?who=acme"), go(f"{sites.url}/storage"), seen, tenant="acme"
    )
    assert again.result.outputs["seen"] == '{"cookie":"who=acme","local":"acme","session":"acme"}'


async def test_every_browser_step_runs(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        go(f"{sites.url}/steps", "page"),
        js.Step(name="colour", select=js.SelectStep(selector="#colour", value="Green")),
        js.Step(fill=js.FillStep(selector="#box", value="x")),
        js.Step(press=js.PressStep(selector="#box", key="Enter")),
        js.Step(press=js.PressStep(key="a")),
        js.Step(name="keys", extract=js.ExtractStep(selector="#keys")),
        js.Step(wait_for=js.WaitForStep(text="late text")),
        js.Step(wait_for=js.WaitForStep(network_idle=True)),
        js.Step(assertion=js.AssertStep(selector_absent="#banner")),
        js.Step(assertion=js.AssertStep(selector_present="#bottom")),
        js.Step(assertion=js.AssertStep(status=200)),
        js.Step(assertion=js.AssertStep(text_contains="Bottom")),
        js.Step(scroll=js.ScrollStep(selector="#bottom")),
        js.Step(scroll=js.ScrollStep()),
        js.Step(name="scrolled", extract=js.ExtractStep(selector="html", attribute="data-x")),
        js.Step(name="bottom", extract=js.ExtractStep(selector="#bottom", html=True)),
        js.Step(name="api", extract=js.ExtractStep(selector="body", attribute="data-api")),
        js.Step(name="shot", screenshot=js.ScreenshotStep(selector="#bottom")),
        js.Step(name="html", snapshot=js.SnapshotStep()),
        js.Step(name="body", request=js.RequestStep(url=f"{sites.url}/api", save_body=True)),
    )
    assert outcome.failure is None, outcome.failure
    out = json_format.MessageToDict(outcome.result.outputs)
    assert out["page"] == {"status": 200, "url": f"{sites.url}/steps"}
    assert out["colour"] == "g"
    assert out["keys"] == "Enter;a;"
    assert out["bottom"] == '<p id="bottom">Bottom <b>bold</b></p>'
    assert out["api"] == "api-ok"  # the page's own fetch went through the proxy, allowed
    shot, html, body = outcome.result.artifacts
    assert shot.content_type == "image/png"
    assert shot.name == "step-17.png"
    data = b"".join([c async for c in engine.store.read("acme", shot.artifact_id)])
    assert data.startswith(b"\x89PNG")
    assert len(data) == shot.size_bytes
    page = b"".join([c async for c in engine.store.read("acme", html.artifact_id)])
    assert html.content_type.startswith("text/html")
    assert b"<p>late text</p>" in page  # the HTML after its scripts ran
    assert out["html"]["artifact_id"] == html.artifact_id
    assert out["body"]["body"]["sha256"] == body.sha256
    assert b"".join([c async for c in engine.store.read("acme", body.artifact_id)]) == b"api-ok"
    assert all(s.status == SUCCEEDED for s in outcome.result.steps)


async def test_an_extract_past_the_cap_fails_its_step_and_returns_nothing(  # type: ignore[no-untyped-def]
    engine, sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`#bottom` as HTML is 37 characters: a cap of 37 takes it, 36 refuses it whole."""
    monkeypatch.setattr(browser_steps, "MAX_EXTRACT_CHARS", 37)
    whole = js.Step(name="bottom", extract=js.ExtractStep(selector="#bottom", html=True))
    fits = await engine.run(go(f"{sites.url}/steps"), whole)
    assert fits.failure is None, fits.failure
    assert fits.result.outputs["bottom"] == '<p id="bottom">Bottom <b>bold</b></p>'
    monkeypatch.setattr(browser_steps, "MAX_EXTRACT_CHARS", 36)
    over = await engine.run(go(f"{sites.url}/steps"), whole)
    assert over.failure is not None
    assert over.failure.code == r.RESPONSE_TOO_LARGE
    assert over.failure.message == (
        "step 1 (extract html 'bottom' '#bottom'):"
        " extracts 37 characters, more than the 36 an extract may return"
    )
    assert "bottom" not in over.result.outputs
    assert [s.status for s in over.result.steps] == [SUCCEEDED, FAILED]


async def test_step_timeout_and_missing_selector_name_the_step(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    timed = await engine.run(
        go(f"{sites.url}/steps"),
        js.Step(wait_for=js.WaitForStep(selector="#never"), timeout=seconds(0.3)),
        js.Step(click=js.ClickStep(selector="#bottom")),
    )
    assert timed.failure is not None
    assert timed.failure.code == r.TIMEOUT
    assert timed.failure.retryable
    assert "step 1 (wait_for selector '#never')" in timed.failure.message
    assert [s.status for s in timed.result.steps] == [SUCCEEDED, FAILED, SKIPPED]

    missing = await engine.run(
        go(f"{sites.url}/steps"),
        js.Step(click=js.ClickStep(selector="#nothing-here"), timeout=seconds(0.3)),
    )
    assert missing.failure is not None
    assert "step 1 (click '#nothing-here')" in missing.result.steps[1].error_message

    bad = await engine.run(go(f"{sites.url}/steps"), js.Step(extract=js.ExtractStep(selector="a[")))
    assert bad.failure is not None
    assert bad.failure.code == r.INVALID_SELECTOR
    assert "'a['" in bad.failure.message


async def test_a_job_timeout_stops_a_slow_page(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(go(f"{sites.url}/slow"), attempt_timeout=seconds(1))
    assert outcome.failure is not None
    assert outcome.failure.code == r.TIMEOUT
    assert "step 0 (request)" in outcome.failure.message


async def test_cancellation_stops_a_slow_page_within_a_second(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    run = asyncio.create_task(engine.run(go(f"{sites.url}/slow")))
    await asyncio.wait_for(sites.slow_started.wait(), 10)
    run.cancel()
    done, _ = await asyncio.wait({run}, timeout=1.0)
    assert done == {run}
    assert run.cancelled()
    # The engine is fine afterwards: the next job runs.
    sites.release.set()
    after = await engine.run(go(f"{sites.url}/steps"))
    assert after.failure is None, after.failure


def _kill_chromium() -> int:
    """SIGKILL every Chromium main process this test process started; how many."""
    tree = chromium._children()
    found, todo = [], [os.getpid()]
    while todo:
        for child in tree.get(todo.pop(), []):
            todo.append(child)
            argv = chromium._read(f"/proc/{child}/cmdline").split(b"\0")
            if b"chromium" in argv[0] and not any(a.startswith(b"--type=") for a in argv):
                found.append(child)
    for pid in found:
        os.kill(pid, signal.SIGKILL)
    return len(found)


async def test_a_killed_chromium_fails_the_attempt_retryably(engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    # Killed while idle: the next job gets a fresh browser.
    assert _kill_chromium() >= 1
    idle = await engine.run(go(f"{sites.url}/steps"))
    assert idle.failure is None, idle.failure

    # Killed mid-job: that attempt fails, retryably; the next one succeeds.
    run = asyncio.create_task(engine.run(go(f"{sites.url}/slow")))
    await asyncio.wait_for(sites.slow_started.wait(), 10)
    assert _kill_chromium() >= 1
    killed = await asyncio.wait_for(run, 10)
    assert killed.failure is not None
    assert killed.failure.retryable, killed.failure
    assert "Chromium exited mid-attempt" in killed.failure.message
    assert killed.result.steps[0].status == FAILED
    after = await engine.run(go(f"{sites.url}/steps"))
    assert after.failure is None, after.failure


async def test_the_browser_is_recycled_after_n_jobs(make_engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    engine = await make_engine(recycle_after=2)
    browsers = []
    for _ in range(3):
        outcome = await engine.run(go(f"{sites.url}/steps"))
        assert outcome.failure is None, outcome.failure
        browsers.append(engine.host.browser)
    assert browsers[0] is browsers[1]
    assert browsers[2] is not browsers[1]
    assert not browsers[0].is_connected()


async def test_a_browser_using_too_much_memory_is_replaced(make_engine, sites: Sites) -> None:  # type: ignore[no-untyped-def]
    engine = await make_engine(max_memory_mb=1, memory_check_every=1)  # any browser is too big
    first = await engine.run(go(f"{sites.url}/steps"))
    assert first.failure is None, first.failure
    used = engine.host.browser
    second = await engine.run(go(f"{sites.url}/steps"))
    assert second.failure is None, second.failure
    assert engine.host.browser is not used
    assert not used.is_connected()
