"""The HTTP engine against a real aiohttp site on 127.0.0.1."""

from __future__ import annotations

import json

from google.protobuf import duration_pb2, json_format

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord_executor.domain import results as r
from accord_executor.engines.http import HttpEngine

USER_AGENT = "Accord/0.1 (+https://accord.dev/bot)"


def request(url: str, name: str = "", **fields: object) -> js.Step:
    return js.Step(name=name, request=js.RequestStep(url=url, **fields))  # type: ignore[arg-type]


def extract(name: str, selector: str, attribute: str = "", *, all: bool = False) -> js.Step:
    return js.Step(
        name=name, extract=js.ExtractStep(selector=selector, attribute=attribute, all=all)
    )


def check(**fields: object) -> js.Step:
    return js.Step(assertion=js.AssertStep(**fields))  # type: ignore[arg-type]


def spec(*steps: js.Step, **fields: object) -> js.JobSpec:
    return js.JobSpec(engine=js.ENGINE_HTTP, steps=steps, **fields)  # type: ignore[arg-type]


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(value * 1000))
    return d


def statuses(result: job_result_pb2.JobResult) -> list[str]:
    return [
        job_result_pb2.StepStatus.Name(s.status).removeprefix("STEP_STATUS_") for s in result.steps
    ]


async def test_fetches_extracts_and_asserts(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    seen: list[int] = []
    outcome = await engine.run(
        spec(
            request(f"{site.url}/", "home"),
            check(status=200),
            check(text_contains="Welcome to the test site"),
            check(selector_present="ul.links"),
            extract("title", "title"),
            extract("links", "ul.links a", "href", all=True),
            extract("labels", "ul.links a", all=True),
            extract("amount", "p.price", "data-amount"),
            extract("nothing", "table.none"),
        ),
        on_step=lambda s: seen.append(s.index),
    )
    assert outcome.failure is None
    assert seen == list(range(9))
    assert statuses(outcome.result) == ["SUCCEEDED"] * 9
    assert outcome.result.steps[0].http_status == 200
    outputs = json_format.MessageToDict(outcome.result.outputs)
    assert outputs["title"] == "Accord Test Site"
    assert outputs["links"] == ["/about", "/jobs", "/status/404"]
    assert outputs["labels"] == ["About us", "Open jobs", "Missing"]
    assert outputs["amount"] == "42"
    assert outputs["nothing"] is None
    assert outputs["home"]["status"] == 200
    assert outputs["home"]["url"] == f"{site.url}/"
    assert "Welcome" in outputs["home"]["body"]
    assert json_format.MessageToDict(outcome.result.steps[5].output) == outputs["links"]
    assert outcome.result.duration.ToNanoseconds() > 0


async def test_result_template_and_templated_requests(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        spec(
            request(f"{site.url}/"),
            extract("links", "ul.links a", "href", all=True),
            extract("first", "ul.links a", "href"),
            request(f"{site.url}{{{{ steps.first }}}}", "about"),
            extract("about_title", "title"),
            result_template={
                "links": "{{ steps.links }}",
                "status": "{{ about.status }}",
                "line": "{{ about_title }} has status {{ about.status }}",
            },
        )
    )
    assert outcome.failure is None
    assert json_format.MessageToDict(outcome.result.outputs) == {
        "links": ["/about", "/jobs", "/status/404"],
        "status": 200.0,
        "line": "About has status 200",
    }


async def test_failing_assertion_is_not_retryable(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        spec(
            request(f"{site.url}/status/404", "page"),
            check(status=200),
            extract("title", "title"),
        )
    )
    assert outcome.failure is not None
    assert outcome.failure.code == r.ASSERTION_FAILED
    assert not outcome.failure.retryable
    assert "expected HTTP status 200, got 404" in outcome.failure.message
    assert statuses(outcome.result) == ["SUCCEEDED", "FAILED", "SKIPPED"]
    assert outcome.result.steps[0].http_status == 404
    assert outcome.result.steps[1].error_message == outcome.failure.message
    # What was saved before the failure comes back as the partial result.
    assert json_format.MessageToDict(outcome.result.outputs)["page"]["status"] == 404


async def test_text_and_selector_assertions_fail(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    for failing in (check(text_contains="Goodbye"), check(selector_present="form#login")):
        outcome = await engine.run(spec(request(f"{site.url}/"), failing))
        assert outcome.failure is not None
        assert outcome.failure.code == r.ASSERTION_FAILED


async def test_connection_refused_is_a_retryable_http_error(
    engine: HttpEngine, closed_port: int
) -> None:
    outcome = await engine.run(
        spec(request(f"http://127.0.0.1:{closed_port}/"), extract("t", "title"))
    )
    assert outcome.failure is not None
    assert outcome.failure.code == r.HTTP_ERROR
    assert outcome.failure.retryable
    assert statuses(outcome.result) == ["FAILED", "SKIPPED"]


async def test_step_timeout_is_a_retryable_timeout(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    step = request(f"{site.url}/slow")
    step.timeout.CopyFrom(seconds(0.2))
    outcome = await engine.run(spec(step))
    assert site.slow_started.is_set()
    assert outcome.failure is not None
    assert outcome.failure.code == r.TIMEOUT
    assert outcome.failure.retryable


async def test_attempt_timeout_bounds_every_step(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    wait = js.Step(wait_for=js.WaitForStep(delay=seconds(30)))
    outcome = await engine.run(spec(wait, request(f"{site.url}/"), attempt_timeout=seconds(1)))
    assert outcome.failure is not None
    assert outcome.failure.code == r.TIMEOUT
    assert statuses(outcome.result) == ["FAILED", "SKIPPED"]
    assert outcome.result.duration.ToMilliseconds() < 30_000


async def test_wait_for_delay_succeeds(engine: HttpEngine) -> None:
    outcome = await engine.run(spec(js.Step(wait_for=js.WaitForStep(delay=seconds(0.01)))))
    assert outcome.failure is None
    assert outcome.result.steps[0].duration.ToNanoseconds() >= 10_000_000


async def test_browser_only_steps_are_not_supported(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    for step in (
        js.Step(click=js.ClickStep(selector="a")),
        js.Step(fill=js.FillStep(selector="input", value="x")),
        js.Step(screenshot=js.ScreenshotStep()),
        js.Step(wait_for=js.WaitForStep(selector="h1")),
        js.Step(select=js.SelectStep(selector="select", value="a")),
        js.Step(press=js.PressStep(key="Enter")),
        js.Step(scroll=js.ScrollStep()),
        js.Step(wait_for=js.WaitForStep(network_idle=True)),
        js.Step(extract=js.ExtractStep(selector="h1", html=True)),
    ):
        outcome = await engine.run(spec(request(f"{site.url}/"), step))
        assert outcome.failure is not None
        assert outcome.failure.code == r.STEP_NOT_SUPPORTED
        assert not outcome.failure.retryable
        assert "browser engine" in outcome.result.steps[1].error_message
        assert outcome.result.steps[1].error_message.startswith("step 1 (")


async def test_template_errors_fail_before_any_request(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        spec(request(f"{site.url}/{{{{ ghost }}}}"), request(f"{site.url}/"))
    )
    assert outcome.failure is not None
    assert outcome.failure.code == r.TEMPLATE_ERROR
    assert not outcome.failure.retryable
    assert statuses(outcome.result) == ["SKIPPED", "SKIPPED"]
    assert site.hits == []


async def test_result_template_runtime_error(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        spec(request(f"{site.url}/", "home"), result_template={"x": "{{ home.headers }}"})
    )
    assert outcome.failure is not None
    assert outcome.failure.code == r.TEMPLATE_ERROR
    assert "result_template[x]" in outcome.failure.message


async def test_extract_before_any_request_fails(engine: HttpEngine) -> None:
    outcome = await engine.run(spec(extract("t", "title")))
    assert outcome.failure is not None
    assert outcome.failure.code == r.NO_RESPONSE


async def test_invalid_selector_fails(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(spec(request(f"{site.url}/"), extract("t", "a[[[")))
    assert outcome.failure is not None
    assert outcome.failure.code == r.INVALID_SELECTOR


async def test_rendered_url_must_be_http(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    outcome = await engine.run(
        spec(request(f"{site.url}/"), extract("link", "a", "href"), request("{{ link }}"))
    )
    assert outcome.failure is not None
    assert outcome.failure.code == r.INVALID_URL
    assert not outcome.failure.retryable


async def test_identifies_honestly_and_sends_method_headers_body(  # type: ignore[no-untyped-def]
    engine: HttpEngine, site
) -> None:
    outcome = await engine.run(
        spec(
            request(
                f"{site.url}/echo",
                "echo",
                method="POST",
                headers={"X-Token": "t1", "User-Agent": "Mozilla/5.0 (pretend)"},
                body=b"hello",
            )
        )
    )
    assert outcome.failure is None
    seen = json.loads(json_format.MessageToDict(outcome.result.outputs)["echo"]["body"])
    assert seen == {
        "method": "POST",
        "user_agent": USER_AGENT,
        "x_token": "t1",
        "cookie": "",
        "body": "hello",
    }


async def test_cookies_last_for_one_job_only(engine: HttpEngine, site) -> None:  # type: ignore[no-untyped-def]
    first = await engine.run(
        spec(request(f"{site.url}/login"), request(f"{site.url}/echo", "echo"))
    )
    second = await engine.run(spec(request(f"{site.url}/echo", "echo")))

    def cookie(outcome) -> str:  # type: ignore[no-untyped-def]
        body = json_format.MessageToDict(outcome.result.outputs)["echo"]["body"]
        return str(json.loads(body)["cookie"])

    assert cookie(first) == "s3cret"
    assert cookie(second) == ""
