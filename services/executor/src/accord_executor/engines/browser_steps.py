"""What each step does on a Playwright page; one function per action.

Each raises StepFailed with a stable code and a message naming the selector; the engine
adds the step's index and kind. Playwright's own timeouts are set to the step's remaining
time so a wait that runs out says what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page, Request, Response
from playwright.async_api import TimeoutError as PlaywrightTimeout

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord_executor.artifacts import ArtifactStore
from accord_executor.domain import results as r
from accord_executor.domain.templates import render_text
from accord_executor.engines.http import MAX_BODY_BYTES
from accord_executor.engines.proxy import Ticket

# What one extract may return, in characters: its values go into the job's result (a workflow
# reads a whole rendered page this way), so they are capped as the HTTP engine caps a body.
MAX_EXTRACT_CHARS = MAX_BODY_BYTES
# Extract in one round trip: text (whitespace collapsed later), an attribute, or outer HTML;
# past the cap, only the size comes back, so nothing that large leaves the page.
EXTRACT_JS = """(els, [attr, html, cap]) => {
  const values = els.map(e => html ? e.outerHTML : attr ? e.getAttribute(attr) : e.textContent);
  const size = values.reduce((n, v) => n + (v ? v.length : 0), 0);
  return size > cap ? {tooLarge: size} : values;
}"""
TEXT_JS = "t => !!document.body && document.body.innerText.includes(t)"


@dataclass
class PageState:
    """One browser attempt: its page, request log, outputs and artifacts so far."""

    page: Page
    ticket: Ticket
    tenant: str
    store: ArtifactStore
    step_deadline: float = 0.0
    status: int = 0  # HTTP status of the latest navigation
    outputs: dict[str, Any] = field(default_factory=dict)
    artifacts: list[job_result_pb2.ArtifactRef] = field(default_factory=list)

    def ms(self) -> float:
        """The step's remaining time, for Playwright's own timeouts (0 would mean none)."""
        return max((self.step_deadline - time.monotonic()) * 1000, 1.0)


Action = Callable[[PageState, int, job_spec_pb2.Step], Awaitable[Any]]


async def navigate(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    if step.request.method not in {"", "GET"}:
        raise r.StepFailed(r.STEP_NOT_SUPPORTED, "the browser engine only navigates (GET)")
    url = render_text(step.request.url, s.outputs)
    try:
        response = await s.page.goto(url, timeout=s.ms(), wait_until="load")
    except PlaywrightTimeout:
        raise TimeoutError from None
    except PlaywrightError as exc:
        raise _refused(s, [url]) or r.StepFailed(
            r.HTTP_ERROR, f"loading {url} failed: {first_line(exc)}"
        ) from None
    if response is not None:
        refused = _refused(s, _chain(response))
        if refused is not None:
            raise refused
    s.status = response.status if response is not None else 0
    output: dict[str, Any] = {"status": s.status, "url": s.page.url}
    if step.request.save_body and response is not None:
        body = await response.body()
        kind = response.headers.get("content-type", "application/octet-stream")
        output["body"] = await _keep(s, body, f"step-{index}.body", kind)
    return output


async def _keep(s: PageState, data: bytes, name: str, content_type: str) -> dict[str, Any]:
    """Store an artifact for the attempt's tenant; what the step's output says of it."""
    ref = await s.store.put(s.tenant, data, name=name, content_type=content_type)
    s.artifacts.append(ref)
    return {"artifact_id": ref.artifact_id, "sha256": ref.sha256, "size_bytes": ref.size_bytes}


async def snapshot(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    html = (await s.page.content()).encode()
    return await _keep(s, html, f"step-{index}.html", "text/html; charset=utf-8")


def _chain(response: Response) -> list[str]:
    urls: list[str] = []
    request: Request | None = response.request
    while request is not None:
        urls.append(request.url)
        request = request.redirected_from
    return urls


def _refused(s: PageState, urls: list[str]) -> r.StepFailed | None:
    """The proxy's refusal of the navigation (or any hop of it), if it refused one."""
    for url in urls:
        failure = s.ticket.refused.get(url)
        if failure is None and url.startswith("https://"):
            host = url.split("/", 3)[2]
            port = "" if ":" in host else ":443"
            failure = s.ticket.refused.get(f"https://{host}{port}/")
        if failure is not None:
            return r.StepFailed(failure.code, failure.message)
    return None


async def click(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    await _do(s.page.click(step.click.selector, timeout=s.ms()), step.click.selector)


async def fill(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    value = render_text(step.fill.value, s.outputs)
    await _do(s.page.fill(step.fill.selector, value, timeout=s.ms()), step.fill.selector)


async def select(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    value = render_text(step.select.value, s.outputs)
    chosen = await _do(
        s.page.select_option(step.select.selector, value, timeout=s.ms()), step.select.selector
    )
    return chosen[0] if chosen else None


async def press(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    if step.press.selector:
        await _do(
            s.page.press(step.press.selector, step.press.key, timeout=s.ms()), step.press.selector
        )
    else:
        await _do(s.page.keyboard.press(step.press.key), "")


async def scroll(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    if step.scroll.selector:
        locator = s.page.locator(step.scroll.selector).first
        await _do(locator.scroll_into_view_if_needed(timeout=s.ms()), step.scroll.selector)
    else:
        await s.page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")


async def wait_for(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    w = step.wait_for
    kind = w.WhichOneof("condition")
    if kind == "delay":
        await s.page.wait_for_timeout(w.delay.ToTimedelta().total_seconds() * 1000)
    elif kind == "selector":
        await _do(s.page.wait_for_selector(w.selector, state="visible", timeout=s.ms()), w.selector)
    elif kind == "text":
        text = render_text(w.text, s.outputs)
        await _do(s.page.wait_for_function(TEXT_JS, arg=text, timeout=s.ms()), "")
    else:
        await _do(s.page.wait_for_load_state("networkidle", timeout=s.ms()), "")


async def extract(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    e = step.extract
    raw = await _do(
        s.page.eval_on_selector_all(
            e.selector, EXTRACT_JS, [e.attribute, e.html, MAX_EXTRACT_CHARS]
        ),
        e.selector,
    )
    if isinstance(raw, dict):
        raise r.StepFailed(
            r.RESPONSE_TOO_LARGE,
            f"extracts {raw['tooLarge']} characters,"
            f" more than the {MAX_EXTRACT_CHARS} an extract may return",
        )
    values = [v if e.html or e.attribute or v is None else " ".join(v.split()) for v in raw]
    if e.all:
        return values
    return values[0] if values else None


async def screenshot(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    shot = step.screenshot
    if shot.selector:
        locator = s.page.locator(shot.selector).first
        data = await _do(locator.screenshot(timeout=s.ms()), shot.selector)
    else:
        data = await s.page.screenshot(full_page=shot.full_page, timeout=s.ms())
    return await _keep(s, data, f"step-{index}.png", "image/png")


async def assertion(s: PageState, index: int, step: job_spec_pb2.Step) -> Any:
    a = step.assertion
    kind = a.WhichOneof("check")
    if kind == "status" and s.status != a.status:
        raise r.StepFailed(r.ASSERTION_FAILED, f"expected HTTP status {a.status}, got {s.status}")
    if kind == "text_contains":
        expected = render_text(a.text_contains, s.outputs)
        if not await s.page.evaluate(TEXT_JS, expected):
            raise r.StepFailed(
                r.ASSERTION_FAILED, f"page {s.page.url} does not contain {expected!r}"
            )
    if kind in {"selector_present", "selector_absent"}:
        selector = a.selector_present or a.selector_absent
        found = await _do(s.page.locator(selector).count(), selector)
        if kind == "selector_present" and not found:
            raise r.StepFailed(r.ASSERTION_FAILED, f"no element matches {selector!r}")
        if kind == "selector_absent" and found:
            raise r.StepFailed(r.ASSERTION_FAILED, f"{found} element(s) match {selector!r}")
    return True


ACTIONS: dict[str, Action] = {
    "request": navigate,
    "click": click,
    "fill": fill,
    "select": select,
    "press": press,
    "scroll": scroll,
    "wait_for": wait_for,
    "extract": extract,
    "screenshot": screenshot,
    "assertion": assertion,
    "snapshot": snapshot,
}


async def _do(action: Awaitable[Any], selector: str) -> Any:
    """Run a Playwright call; its errors as StepFailed naming the selector."""
    where = f" {selector!r}" if selector else ""
    try:
        return await action
    except PlaywrightTimeout:
        raise r.StepFailed(r.TIMEOUT, f"timed out waiting for{where or ' the page'}") from None
    except PlaywrightError as exc:
        text = first_line(exc)
        lowered = text.lower()
        if "selector" in lowered and ("valid" in lowered or "parsing" in lowered):
            raise r.StepFailed(r.INVALID_SELECTOR, f"invalid CSS selector{where}: {text}") from None
        raise r.StepFailed(r.EXECUTOR_ERROR, f"{selector or 'page'}: {text}") from exc


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [repr(exc)])[0]
