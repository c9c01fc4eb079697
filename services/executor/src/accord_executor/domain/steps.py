"""Which engine runs which step: the one table, for the engines and for submission checks.

A step kind maps to the engines that can run it; a few kinds have variants (a wait for a
selector, an HTML extraction) that only the browser can run although the kind itself runs
anywhere. `engine_problems` reads a whole spec against the table, so a job that could never
run is refused where it is submitted instead of failing an attempt later.
"""

from __future__ import annotations

from accord.common.v1 import job_spec_pb2

HTTP = job_spec_pb2.ENGINE_HTTP
BROWSER = job_spec_pb2.ENGINE_BROWSER
BOTH = frozenset({HTTP, BROWSER})
ONLY_BROWSER = frozenset({BROWSER})

# Step action (the `Step.action` oneof's field name) -> engines that run it.
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


def engine_problems(spec: job_spec_pb2.JobSpec) -> list[tuple[str, str]]:
    """(field path within the spec, description) for each step the spec's engine cannot run."""
    problems: list[tuple[str, str]] = []
    name = job_spec_pb2.Engine.Name(spec.engine).removeprefix("ENGINE_").lower()
    for index, step in enumerate(spec.steps):
        if spec.engine not in engines_for(step):
            field = f"steps[{index}].{step.WhichOneof('action')}"
            problems.append((field, f"{describe(step)} steps need the browser engine, not {name}"))
        if step.WhichOneof("action") == "extract" and step.extract.html and step.extract.attribute:
            problems.append((f"steps[{index}].extract", "html and attribute exclude each other"))
    return problems
