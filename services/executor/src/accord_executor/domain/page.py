"""The latest response of a job and what extract and assert steps read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from accord.common.v1 import job_spec_pb2
from accord_executor.domain.results import (
    ASSERTION_FAILED,
    INVALID_SELECTOR,
    StepFailed,
)


@dataclass
class Page:
    """One HTTP response: final URL after redirects, status and decoded body."""

    url: str
    status: int
    text: str
    _tree: LexborHTMLParser | None = field(default=None, repr=False)

    def tree(self) -> LexborHTMLParser:
        # Parsed on first use: most responses of a job are never queried.
        if self._tree is None:
            self._tree = LexborHTMLParser(self.text)
        return self._tree

    def select(self, selector: str) -> list[LexborNode]:
        try:
            return list(self.tree().css(selector))
        except SelectolaxError as exc:
            raise StepFailed(
                INVALID_SELECTOR, f"invalid CSS selector {selector!r}: {exc}"
            ) from None

    def extract(self, step: job_spec_pb2.ExtractStep) -> Any:
        """Text (whitespace collapsed) or an attribute of the first match, or of every match."""
        values = [_read(node, step.attribute) for node in self.select(step.selector)]
        if step.all:
            return values
        return values[0] if values else None

    def check(self, step: job_spec_pb2.AssertStep, expected_text: str = "") -> None:
        """Raise ASSERTION_FAILED unless the check holds; `expected_text` is the rendered text."""
        kind = step.WhichOneof("check")
        if kind == "status" and self.status != step.status:
            raise StepFailed(
                ASSERTION_FAILED, f"expected HTTP status {step.status}, got {self.status}"
            )
        if kind == "text_contains" and expected_text not in self.text:
            raise StepFailed(
                ASSERTION_FAILED, f"response from {self.url} does not contain {expected_text!r}"
            )
        if kind == "selector_absent" and self.select(step.selector_absent):
            raise StepFailed(
                ASSERTION_FAILED, f"an element matches {step.selector_absent!r} on {self.url}"
            )
        if kind == "selector_present" and not self.select(step.selector_present):
            raise StepFailed(
                ASSERTION_FAILED, f"no element matches {step.selector_present!r} on {self.url}"
            )


def _read(node: LexborNode, attribute: str) -> str | None:
    if attribute:
        return node.attributes.get(attribute)
    return " ".join((node.text() or "").split())
