"""Whether a job spec can run at all, read whole before anything runs.

One pure function, `problems`, answers it for every place a spec enters the system (a job,
a batch, a schedule's or a workflow's template, a run now), so they all refuse the same
specs: templates that refer to no earlier named step, names used twice, steps the spec's
engine cannot run, selectors that do not parse, and steps that read a page before any
request loaded one. Each problem is (field path within the spec, description); `check`
names the paths as the request's fields and raises InvalidArgument.

Also here, because the checks need them and the executor runs by them: the table of which
engine runs which step, and the template syntax's parsing (`{{ name }}`,
`{{ steps.name.path }}`); rendering stays with the executor.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, SelectolaxError

from accord.common.v1 import job_spec_pb2
from accord_kit.errors import FieldViolation, InvalidArgument

Problem = tuple[str, str]

# --- which engine runs which step -------------------------------------------------------

HTTP = job_spec_pb2.ENGINE_HTTP
BROWSER = job_spec_pb2.ENGINE_BROWSER
BOTH = frozenset({HTTP, BROWSER})
ONLY_BROWSER = frozenset({BROWSER})

# Step action (the `Step.action` oneof's field name) -> engines that run it. A few kinds
# have variants (a wait for a selector, an HTML extraction) that only the browser can run
# although the kind itself runs anywhere: `engines_for` reads those.
ENGINES_BY_ACTION: dict[str, frozenset[job_spec_pb2.Engine.ValueType]] = {
    "request": BOTH,
    "click": ONLY_BROWSER,
    "fill": ONLY_BROWSER,
    "wait_for": BOTH,
    "extract": BOTH,
    "screenshot": ONLY_BROWSER,
    "assertion": BOTH,
    "select": ONLY_BROWSER,
    "press": ONLY_BROWSER,
    "scroll": ONLY_BROWSER,
    "snapshot": ONLY_BROWSER,
}


def describe(step: job_spec_pb2.Step) -> str:
    """The step's kind as errors name it: `click`, `wait_for text`, `extract html`."""
    kind = step.WhichOneof("action") or "step"
    if kind == "wait_for":
        return f"wait_for {step.wait_for.WhichOneof('condition') or ''}".strip()
    if kind == "extract" and step.extract.html:
        return "extract html"
    if kind == "request" and step.request.save_body:
        return "request save_body"
    return kind


def engines_for(step: job_spec_pb2.Step) -> frozenset[job_spec_pb2.Engine.ValueType]:
    """The engines that can run this step, variants included."""
    kind = step.WhichOneof("action")
    if kind is None:
        return frozenset()
    if kind == "wait_for" and step.wait_for.WhichOneof("condition") != "delay":
        return ONLY_BROWSER  # selectors, text and network idle need a rendered page
    if (kind == "extract" and step.extract.html) or (kind == "request" and step.request.save_body):
        return ONLY_BROWSER
    return ENGINES_BY_ACTION[kind]


def reads_page(step: job_spec_pb2.Step) -> bool:
    """Whether the step acts on the page a request loaded; only requests and fixed delays
    make sense before the first one."""
    kind = step.WhichOneof("action")
    if kind == "request" or kind is None:
        return False
    return not (kind == "wait_for" and step.wait_for.WhichOneof("condition") == "delay")


# --- the template syntax ----------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = r"[a-z_][a-z0-9_]{0,62}"
_REFERENCE = re.compile(rf"^(?:steps\.)?(?P<name>{_NAME})(?P<path>(?:\.[A-Za-z0-9_-]+)*)$")


class TemplateError(ValueError):
    """A template is malformed or refers to an output that does not exist."""


@dataclass(frozen=True)
class Reference:
    """One `{{ ... }}`: the saved output's name and the path walked into its value."""

    name: str
    path: tuple[str, ...]
    text: str


def parse(inner: str) -> Reference:
    """The reference inside one `{{ ... }}`."""
    match = _REFERENCE.match(inner.strip())
    if match is None:
        raise TemplateError(
            f"malformed reference {{{{{inner}}}}}: expected {{{{ name }}}} or {{{{ steps.name }}}}"
        )
    path = tuple(p for p in match["path"].split(".") if p)
    return Reference(match["name"], path, inner.strip())


def references(template: str) -> list[Reference]:
    """Every reference of a template; TemplateError when one is malformed or unclosed."""
    refs = [parse(m[1]) for m in PLACEHOLDER.finditer(template)]
    if "{{" in PLACEHOLDER.sub("", template):
        raise TemplateError(f"unclosed '{{{{' in template {template!r}")
    return refs


def templated_fields(step: job_spec_pb2.Step) -> Iterator[tuple[str, str]]:
    """(field path within the step, template) for every step field the engines render."""
    kind = step.WhichOneof("action")
    if kind == "request":
        yield "request.url", step.request.url
        for key, value in step.request.headers.items():
            yield f"request.headers[{key}]", value
    elif kind == "fill":
        yield "fill.value", step.fill.value
    elif kind == "select":
        yield "select.value", step.select.value
    elif kind == "wait_for" and step.wait_for.WhichOneof("condition") == "text":
        yield "wait_for.text", step.wait_for.text
    elif kind == "assertion" and step.assertion.WhichOneof("check") == "text_contains":
        yield "assertion.text_contains", step.assertion.text_contains


# --- selectors --------------------------------------------------------------------------

_EMPTY_PAGE = LexborHTMLParser("<html></html>")


@functools.lru_cache(maxsize=4096)
def check_selector(selector: str) -> str | None:
    """Why the CSS selector is unusable, or None."""
    try:
        _EMPTY_PAGE.css(selector)
    except SelectolaxError as exc:
        return str(exc) or "not a valid CSS selector"
    return None


def selector_fields(step: job_spec_pb2.Step) -> Iterator[tuple[str, str]]:
    """(field path within the step, selector) for every CSS selector the step sets."""
    kind = step.WhichOneof("action")
    if kind in {"click", "fill", "extract", "screenshot", "select", "press", "scroll"}:
        selector = getattr(step, kind).selector
        if selector:
            yield f"{kind}.selector", selector
    elif kind == "wait_for" and step.wait_for.WhichOneof("condition") == "selector":
        yield "wait_for.selector", step.wait_for.selector
    elif kind == "assertion":
        check = step.assertion.WhichOneof("check")
        if check in {"selector_present", "selector_absent"}:
            yield f"assertion.{check}", getattr(step.assertion, check)


# --- the whole spec ---------------------------------------------------------------------


def problems(spec: job_spec_pb2.JobSpec) -> list[Problem]:
    """(field path within the spec, description) for everything that keeps the spec from
    ever running; empty when it can run."""
    found = template_problems(spec)
    engine = job_spec_pb2.Engine.Name(spec.engine).removeprefix("ENGINE_").lower()
    loaded = False
    for index, step in enumerate(spec.steps):
        at, kind = f"steps[{index}]", step.WhichOneof("action")
        if spec.engine not in engines_for(step):
            needs = f"{describe(step)} steps need the browser engine, not {engine}"
            found.append((f"{at}.{kind}", needs))
        if kind == "extract" and step.extract.html and step.extract.attribute:
            found.append((f"{at}.extract", "html and attribute exclude each other"))
        for field, selector in selector_fields(step):
            if why := check_selector(selector):
                found.append((f"{at}.{field}", f"not a valid CSS selector: {why}"))
        if reads_page(step) and not loaded:
            early = f"{describe(step)} reads the page: a request step must come first"
            found.append((f"{at}.{kind}", early))
        loaded = loaded or kind == "request"
    return found


def template_problems(spec: job_spec_pb2.JobSpec) -> list[Problem]:
    """The template part of `problems`: a step may refer only to outputs of earlier named
    steps, the result template to any named step, and no two steps share a name."""
    found: list[Problem] = []
    saved: set[str] = set()
    for index, step in enumerate(spec.steps):
        for field, template in templated_fields(step):
            found += _check_template(f"steps[{index}].{field}", template, saved)
        if step.name:
            if step.name in saved:
                found.append((f"steps[{index}].name", "is already used by an earlier step"))
            saved.add(step.name)
    for key, template in spec.result_template.items():
        found += _check_template(f"result_template[{key}]", template, saved)
    return found


def violations(spec: job_spec_pb2.JobSpec, prefix: str) -> list[FieldViolation]:
    """The spec's problems as field violations of the request, the spec sitting at
    `prefix` (`spec.`, `specs[3].`, `schedule.job_template.`)."""
    return [FieldViolation(prefix + field, description) for field, description in problems(spec)]


def check(specs: Iterable[tuple[str, job_spec_pb2.JobSpec]]) -> None:
    """Raise InvalidArgument naming every problem of every `(prefix, spec)`, or nothing."""
    found = [v for prefix, spec in specs for v in violations(spec, prefix)]
    if found:
        raise InvalidArgument("job spec can never run", found)


def _check_template(field: str, template: str, saved: set[str]) -> list[Problem]:
    try:
        refs = references(template)
    except TemplateError as exc:
        return [(field, str(exc))]
    return [
        (field, f"unknown reference {{{{ {r.text} }}}}: no earlier step is named {r.name!r}")
        for r in refs
        if r.name not in saved
    ]
