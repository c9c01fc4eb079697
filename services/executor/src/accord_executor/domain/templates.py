"""The template syntax over saved step outputs: `{{ name }}` or `{{ steps.name }}`.

A reference may walk into the value: `{{ steps.page.status }}`, `{{ links.0 }}`. A template
that is exactly one reference keeps the value's type (list, number, object); anything else
renders to a string. Referring to an output that does not exist (yet) is an error. The
syntax's parsing, and the check that a spec's references can resolve, are
`accord_kit.jobspec`'s; rendering at run time is here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from accord_kit.jobspec import PLACEHOLDER, Reference, TemplateError, parse, references

_WHOLE = re.compile(r"^\s*\{\{(.*?)\}\}\s*$", re.DOTALL)


def render(template: str, outputs: Mapping[str, Any]) -> Any:
    """Render over the outputs; exactly one reference keeps the referenced value's type."""
    whole = _WHOLE.match(template)
    if whole is not None and "{{" not in whole[1]:
        return lookup(parse(whole[1]), outputs)
    return render_text(template, outputs)


def render_text(template: str, outputs: Mapping[str, Any]) -> str:
    """Render to a string, whatever the referenced values are (URLs, headers, text)."""
    references(template)  # rejects malformed and unclosed placeholders first
    return PLACEHOLDER.sub(lambda m: to_text(lookup(parse(m[1]), outputs)), template)


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
