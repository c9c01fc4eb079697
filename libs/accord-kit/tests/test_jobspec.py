"""Whether a job spec can run at all: the one check every submission and RunJob make."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2 as js
from accord_kit import jobspec
from accord_kit.errors import InvalidArgument

URL = "http://127.0.0.1:8080/"


def _request(url: str = URL, name: str = "", **headers: str) -> js.Step:
    return js.Step(name=name, request=js.RequestStep(url=url, headers=headers))


def _spec(*steps: js.Step, engine: int = js.ENGINE_HTTP, **result: str) -> js.JobSpec:
    return js.JobSpec(engine=engine, steps=steps, result_template=result)  # type: ignore[arg-type]


def test_the_table_covers_every_step_action() -> None:
    actions = {f.name for f in js.Step.DESCRIPTOR.oneofs_by_name["action"].fields}
    assert set(jobspec.ENGINES_BY_ACTION) == actions


def test_a_valid_pipeline_has_no_problems() -> None:
    spec = _spec(
        _request(name="home"),
        js.Step(name="link", extract=js.ExtractStep(selector="a.next", attribute="href")),
        js.Step(assertion=js.AssertStep(selector_present="main > h1:first-child")),
        js.Step(wait_for=js.WaitForStep(delay=duration_pb2.Duration(seconds=1))),
        _request("{{ link }}"),
        status="{{ steps.home.status }}",
    )
    assert jobspec.problems(spec) == []
    browser = _spec(
        js.Step(wait_for=js.WaitForStep(delay=duration_pb2.Duration(seconds=1))),
        _request(name="page"),
        js.Step(fill=js.FillStep(selector="input[name=q]", value="{{ page.url }}")),
        js.Step(click=js.ClickStep(selector="button[type=submit]")),
        js.Step(wait_for=js.WaitForStep(text="{{ page.status }}")),
        js.Step(screenshot=js.ScreenshotStep()),
        js.Step(scroll=js.ScrollStep()),
        engine=js.ENGINE_BROWSER,
    )
    assert jobspec.problems(browser) == []


def test_references_must_name_earlier_steps_and_names_are_unique() -> None:
    spec = _spec(
        _request("https://a.test/{{ later }}", "first"),
        js.Step(name="later", extract=js.ExtractStep(selector="a")),
        _request("https://a.test/{{ first.url }}", "later", Authorization="{{ nope }}"),
        js.Step(assertion=js.AssertStep(text_contains="{{ later }}")),
        ok="{{ first }}",
        bad="{{ ghost }}",
        broken="{{ x",
    )
    problems = dict(jobspec.problems(spec))
    assert set(problems) == {
        "steps[0].request.url",
        "steps[2].request.headers[Authorization]",
        "steps[2].name",
        "result_template[bad]",
        "result_template[broken]",
    }
    assert "no earlier step is named 'later'" in problems["steps[0].request.url"]
    assert "already used" in problems["steps[2].name"]
    assert "unclosed" in problems["result_template[broken]"]


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (js.Step(fill=js.FillStep(selector="input", value="{{ nope }}")), "fill.value"),
        (js.Step(select=js.SelectStep(selector="select", value="{{ nope }}")), "select.value"),
        (js.Step(wait_for=js.WaitForStep(text="{{ nope }}")), "wait_for.text"),
    ],
)
def test_every_rendered_field_is_checked(step: js.Step, field: str) -> None:
    spec = _spec(_request(), step, engine=js.ENGINE_BROWSER)
    assert [f for f, _ in jobspec.problems(spec)] == [f"steps[1].{field}"]


def test_steps_the_engine_cannot_run_are_named() -> None:
    steps = [
        _request(),
        js.Step(wait_for=js.WaitForStep(delay=duration_pb2.Duration(seconds=1))),
        js.Step(wait_for=js.WaitForStep(text="x")),
        js.Step(extract=js.ExtractStep(selector="p")),
        js.Step(extract=js.ExtractStep(selector="p", html=True)),
        js.Step(scroll=js.ScrollStep()),
        js.Step(assertion=js.AssertStep(selector_absent="p")),
        js.Step(request=js.RequestStep(url=URL, save_body=True)),
        js.Step(snapshot=js.SnapshotStep()),
    ]
    http = dict(jobspec.problems(_spec(*steps)))
    assert set(http) == {
        "steps[2].wait_for",
        "steps[4].extract",
        "steps[5].scroll",
        "steps[7].request",
        "steps[8].snapshot",
    }
    assert http["steps[4].extract"] == "extract html steps need the browser engine, not http"
    assert jobspec.problems(_spec(*steps, engine=js.ENGINE_BROWSER)) == []
    both = js.Step(extract=js.ExtractStep(selector="p", html=True, attribute="href"))
    assert dict(jobspec.problems(_spec(_request(), both, engine=js.ENGINE_BROWSER))) == {
        "steps[1].extract": "html and attribute exclude each other"
    }


@pytest.mark.parametrize(
    ("step", "field"),
    [
        (js.Step(click=js.ClickStep(selector="a[")), "click.selector"),
        (js.Step(fill=js.FillStep(selector="::nope")), "fill.selector"),
        (js.Step(wait_for=js.WaitForStep(selector="div >")), "wait_for.selector"),
        (js.Step(extract=js.ExtractStep(selector="p:nope(")), "extract.selector"),
        (js.Step(screenshot=js.ScreenshotStep(selector="a[")), "screenshot.selector"),
        (js.Step(select=js.SelectStep(selector="a[", value="v")), "select.selector"),
        (js.Step(press=js.PressStep(key="Enter", selector="a[")), "press.selector"),
        (js.Step(scroll=js.ScrollStep(selector="a[")), "scroll.selector"),
        (js.Step(assertion=js.AssertStep(selector_present="a[")), "assertion.selector_present"),
        (js.Step(assertion=js.AssertStep(selector_absent="a[")), "assertion.selector_absent"),
    ],
)
def test_every_selector_field_must_parse(step: js.Step, field: str) -> None:
    spec = _spec(_request(), step, engine=js.ENGINE_BROWSER)
    [(path, why)] = jobspec.problems(spec)
    assert path == f"steps[1].{field}"
    assert why.startswith("not a valid CSS selector")


@pytest.mark.parametrize(
    "step",
    [
        js.Step(extract=js.ExtractStep(selector="p")),
        js.Step(assertion=js.AssertStep(status=200)),
        js.Step(wait_for=js.WaitForStep(selector="p")),
        js.Step(wait_for=js.WaitForStep(text="x")),
        js.Step(wait_for=js.WaitForStep(network_idle=True)),
        js.Step(click=js.ClickStep(selector="a")),
        js.Step(fill=js.FillStep(selector="input", value="x")),
        js.Step(screenshot=js.ScreenshotStep()),
    ],
)
def test_a_step_that_reads_the_page_needs_a_request_first(step: js.Step) -> None:
    kind = step.WhichOneof("action")
    early = jobspec.problems(_spec(step, _request(), engine=js.ENGINE_BROWSER))
    assert [f for f, _ in early] == [f"steps[0].{kind}"]
    assert "a request step must come first" in early[0][1]
    assert jobspec.problems(_spec(_request(), step, engine=js.ENGINE_BROWSER)) == []


def test_check_names_each_spec_at_its_place_in_the_request() -> None:
    good = _spec(_request())
    bad = _spec(js.Step(click=js.ClickStep(selector="a[")), engine=js.ENGINE_BROWSER)
    jobspec.check([("specs[0].", good)])
    with pytest.raises(InvalidArgument) as raised:
        jobspec.check([("specs[0].", good), ("specs[1].", bad)])
    assert [v.field for v in raised.value.violations] == [
        "specs[1].steps[0].click.selector",
        "specs[1].steps[0].click",
    ]
