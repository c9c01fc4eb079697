"""Unit tests of the pure logic: templates, result building, failure codes."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from accord.common.v1 import job_spec_pb2 as js
from accord_executor.domain import results as r
from accord_executor.domain.templates import render, render_text
from accord_kit.jobspec import TemplateError

OUTPUTS = {
    "title": "Accord Test Site",
    "links": ["/about", "/jobs"],
    "count": 3,
    "page": {"status": 200, "url": "http://x/", "body": "<p>hi</p>"},
    "missing": None,
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ links }}", ["/about", "/jobs"]),
        ("{{ steps.links }}", ["/about", "/jobs"]),
        ("{{steps.count}}", 3),
        ("  {{ page }} ", OUTPUTS["page"]),
        ("{{ steps.page.status }}", 200),
        ("{{ links.1 }}", "/jobs"),
        ("{{ missing }}", None),
    ],
)
def test_one_reference_keeps_the_type(template: str, expected: object) -> None:
    assert render(template, OUTPUTS) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Title: {{ title }}", "Title: Accord Test Site"),
        ("{{ count }} links", "3 links"),
        ("{{ links }}!", '["/about","/jobs"]!'),
        ("http://x{{ steps.links.0 }}?n={{ count }}", "http://x/about?n=3"),
        ("[{{ missing }}]", "[]"),
        ("no references", "no references"),
        ("{{ title }}{{ count }}", "Accord Test Site3"),
    ],
)
def test_mixed_templates_render_to_text(template: str, expected: str) -> None:
    assert render(template, OUTPUTS) == expected


def test_render_text_always_gives_a_string() -> None:
    assert render_text("{{ count }}", OUTPUTS) == "3"
    assert render_text("{{ page.status }}", {"page": {"status": 200.0}}) == "200"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ nope }}", "unknown reference {{ nope }}"),
        ("x {{ steps.nope }}", "unknown reference {{ steps.nope }}"),
        ("{{ page.headers }}", "no 'headers' in the value"),
        ("{{ links.5 }}", "no '5' in the value"),
        ("{{ title.x }}", "no 'x' in the value"),
        ("{{ Title }}", "malformed reference"),
        ("{{ a b }}", "malformed reference"),
        ("{{ }}", "malformed reference"),
        ("{{ title", "unclosed"),
    ],
)
def test_bad_references_are_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        render(template, OUTPUTS)


def test_job_outputs_without_template_returns_every_named_output() -> None:
    struct = r.job_outputs({}, {"title": "T", "links": ["/a"], "n": 2})
    assert json_format.MessageToDict(struct) == {"title": "T", "links": ["/a"], "n": 2.0}


def test_job_outputs_renders_the_template_with_types() -> None:
    struct = r.job_outputs(
        {"links": "{{ steps.links }}", "summary": "{{ title }} ({{ count }})"}, OUTPUTS
    )
    assert json_format.MessageToDict(struct) == {
        "links": ["/about", "/jobs"],
        "summary": "Accord Test Site (3)",
    }


def test_job_outputs_names_the_broken_key() -> None:
    with pytest.raises(TemplateError, match=r"result_template\[x\]"):
        r.job_outputs({"x": "{{ nope }}"}, OUTPUTS)


def test_failure_codes_say_whether_a_retry_can_help() -> None:
    assert r.Failure(r.HTTP_ERROR, "").retryable
    assert r.Failure(r.TIMEOUT, "").retryable
    assert not r.Failure(r.ASSERTION_FAILED, "").retryable
    assert not r.Failure(r.STEP_NOT_SUPPORTED, "").retryable
    assert not r.Failure(r.TEMPLATE_ERROR, "").retryable


def test_step_result_carries_duration_and_output() -> None:
    step = js.Step(name="t", extract=js.ExtractStep(selector="title"))
    result = r.step_result(2, step, r.SUCCEEDED, seconds=1.25, output=r.to_value(["a", 1]))
    assert (result.index, result.name, result.status) == (2, "t", r.SUCCEEDED)
    assert result.duration.ToMilliseconds() == 1250
    assert json.loads(json_format.MessageToJson(result.output)) == ["a", 1]
    assert not r.step_result(0, step, r.SKIPPED).HasField("output")
