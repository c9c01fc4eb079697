"""The template syntax over saved step outputs: `{{ name }}` or `{{ steps.name }}`.

A reference may walk into the value: `{{ steps.page.status }}`, `{{ links.0 }}`. A template
that is exactly one reference keeps the value's type (list, number, object); anything else
renders to a string. Referring to an output that does not exist (yet) is an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from accord.common.v1 import job_spec_pb2

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_NAME = r"[a-z_][a-z0-9_]{0,62}"
_REFERENCE = re.compile(rf"^(?:steps\.)?(?P<name>{_NAME})(?P<path>(?:\.[A-Za-z0-9_-]+)*)$")
_WHOLE = re.compile(r"^\s*\{\{(.*?)\}\}\s*$", re.DOTALL)


class TemplateError(ValueError):
    """A template is malformed or refers to an output that does not exist."""


@dataclass(frozen=True)
class Reference:
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
    refs = [parse(m[1]) for m in _PLACEHOLDER.finditer(template)]
    if "{{" in _PLACEHOLDER.sub("", template):
        raise TemplateError(f"unclosed '{{{{' in template {template!r}")
    return refs


def render(template: str, outputs: Mapping[str, Any]) -> Any:
    """Render over the outputs; exactly one reference keeps the referenced value's type."""
    whole = _WHOLE.match(template)
    if whole is not None and "{{" not in whole[1]:
        return lookup(parse(whole[1]), outputs)
    return render_text(template, outputs)


def render_text(template: str, outputs: Mapping[str, Any]) -> str:
    """Render to a string, whatever the referenced values are (URLs, headers, text)."""
    references(template)  # rejects malformed and unclosed placeholders first
    return _PLACEHOLDER.sub(lambda m: to_text(lookup(parse(m[1]), outputs)), template)


def lookup(ref: Reference, outputs: Mapping[str, Any]) -> Any:
    if ref.name not in outputs:
        raise TemplateError(f"unknown reference {{{{ {ref.text} }}}}: no saved output {ref.name!r}")
    value = outputs[ref.name]
    for key in ref.path:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"unknown reference {{{{ {ref.text} }}}}: no {key!r} in the value")
    return value


def to_text(value: Any) -> str:
    """How a value reads inside a larger string: text as is, null as empty, the rest as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        # Struct numbers are doubles; 200.0 read back from a result should render as 200.
        return str(int(value))
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def templated_fields(step: job_spec_pb2.Step) -> Iterator[tuple[str, str]]:
    """(field path within the step, template) for every step field that takes templates."""
    kind = step.WhichOneof("action")
    if kind == "request":
        yield "request.url", step.request.url
        for key, value in step.request.headers.items():
            yield f"request.headers[{key}]", value
    elif kind == "fill":
        yield "fill.value", step.fill.value
    elif kind == "assertion" and step.assertion.WhichOneof("check") == "text_contains":
        yield "assertion.text_contains", step.assertion.text_contains


def check_spec(spec: job_spec_pb2.JobSpec) -> list[tuple[str, str]]:
    """Static template problems as (field path within the spec, description).

    A step may refer only to outputs of earlier named steps; the result template to any
    named step. Catching this before running saves an attempt that could never succeed.
    """
    problems: list[tuple[str, str]] = []
    saved: set[str] = set()
    for index, step in enumerate(spec.steps):
        for field, template in templated_fields(step):
            problems += _check(f"steps[{index}].{field}", template, saved)
        if step.name:
            if step.name in saved:
                problems.append((f"steps[{index}].name", "is already used by an earlier step"))
            saved.add(step.name)
    for key, template in spec.result_template.items():
        problems += _check(f"result_template[{key}]", template, saved)
    return problems


def _check(field: str, template: str, saved: set[str]) -> list[tuple[str, str]]:
    try:
        refs = references(template)
    except TemplateError as exc:
        return [(field, str(exc))]
    return [
        (field, f"unknown reference {{{{ {r.text} }}}}: no earlier step is named {r.name!r}")
        for r in refs
        if r.name not in saved
    ]
