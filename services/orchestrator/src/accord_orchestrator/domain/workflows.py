"""Workflows, pure: the job each kind runs, and how a finished job becomes a result, a new
state and at most one notification.

A workflow's state carries what the next judgement compares with: the last stored text
snapshot (change detection), the last run's postings, and the target's state and count of
consecutive failures (uptime and checks that could not run).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import re2  # type: ignore[import-untyped]

from accord.common.v1 import job_result_pb2 as js_result
from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord_kit import jobspec
from accord_orchestrator.domain import pagetext

PAGE_STEP = "page"  # the request step's name: its output carries status, URL and body
# The browser engine's page as rendered (scripts run), read after it loaded: the text its
# checks judge, where the http engine's is the response body.
RENDERED_STEP = "rendered"
SCREENSHOT_STEP = "screenshot"  # change detection's optional full-page PNG
DEFAULT_MAX_PAGES = 5
DEFAULT_MIN_STATUS, DEFAULT_MAX_STATUS = 200, 399
DEFAULT_CERTIFICATE_DAYS = 14
# Job error codes that mean the check was not allowed to run, rather than the target failing.
REFUSED = frozenset({"POLICY_DENIED", "POLICY_UNAVAILABLE", "TEMPLATE_ERROR", "INVALID_URL"})
# The policy's reason when the target's robots.txt could not be fetched (RFC 9309 reads
# that as disallow-all): the check was not made, which tells nothing of the target.
ROBOTS_UNAVAILABLE = "ROBOTS_UNAVAILABLE"

OK, DOWN, FAILING = wf.TARGET_STATE_OK, wf.TARGET_STATE_DOWN, wf.TARGET_STATE_CHECK_FAILING


@dataclass(frozen=True)
class Checked:
    """What one finished job tells a workflow. `ran` is False when it produced no page."""

    job_id: str
    ran: bool
    reason: str  # why it did not run (or failed), in words
    error_code: str  # the executor's code for that failure, empty if none
    url: str
    http_status: int = 0
    latency: float = 0.0  # seconds
    body: str = ""
    certificate_expiry: datetime | None = None
    finish_time: datetime | None = None
    refused: bool = False  # the policy (or admission) refused the check
    screenshot: js_result.ArtifactRef | None = None  # the page's, when one was asked for


@dataclass(frozen=True)
class State:
    target: int = wf.TARGET_STATE_UNSPECIFIED
    failures: int = 0
    count: int = 0
    last_check: datetime | None = None
    snapshot: tuple[str, ...] | None = None
    postings: dict[str, dict[str, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "failures": self.failures,
            "count": self.count,
            "last_check": self.last_check.isoformat() if self.last_check else None,
            "snapshot": list(self.snapshot) if self.snapshot is not None else None,
            "postings": self.postings,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> State:
        last = data.get("last_check")
        snapshot = data.get("snapshot")
        return State(
            target=int(data.get("target", 0)),
            failures=int(data.get("failures", 0)),
            count=int(data.get("count", 0)),
            last_check=datetime.fromisoformat(last) if last else None,
            snapshot=tuple(snapshot) if snapshot is not None else None,
            postings=data.get("postings"),
        )


@dataclass
class Judgement:
    result: wf.WorkflowResult
    state: State
    notify: int = wf.NOTIFICATION_KIND_UNSPECIFIED
    extra: dict[str, Any] = field(default_factory=dict)


def target_url(workflow: wf.Workflow) -> str:
    kind = workflow.WhichOneof("kind")
    return str(getattr(workflow, kind).url) if kind else ""


def job_spec(workflow: wf.Workflow, url: str = "", page: int = 1) -> js.JobSpec:
    """The job one run (or one further page of a listing) runs: fetch the target, keep the
    response. Judging happens here, not in the executor, so one fetch serves every check.
    One attempt: a failed check is news for the next judgement, not something to retry."""
    spec = js.JobSpec(
        engine=workflow.engine or js.ENGINE_HTTP,
        authorization_mode=workflow.authorization_mode,
        steps=[js.Step(name=PAGE_STEP, request=js.RequestStep(url=url or target_url(workflow)))],
        retry_policy=js.RetryPolicy(max_attempts=1),
    )
    if spec.engine == js.ENGINE_BROWSER:
        rendered = js.ExtractStep(selector="html", html=True)
        spec.steps.add(name=RENDERED_STEP, extract=rendered)
        if workflow.change_detection.screenshot:  # unset unless it is change detection
            spec.steps.add(name=SCREENSHOT_STEP, screenshot=js.ScreenshotStep(full_page=True))
    spec.labels["workflow_kind"] = workflow.WhichOneof("kind") or ""
    if page > 1:
        spec.labels["workflow_page"] = str(page)
    return spec


def check_definition(workflow: wf.Workflow) -> list[tuple[str, str]]:
    """(field, problem) for what protovalidate cannot see: selectors and patterns."""
    problems: list[tuple[str, str]] = []
    kind = workflow.WhichOneof("kind")

    def selector(path: str, value: str) -> None:
        if value and (why := jobspec.check_selector(value)):
            problems.append((path, f"not a valid CSS selector: {why}"))

    if kind == "change_detection":
        c = workflow.change_detection
        selector("workflow.change_detection.selector", c.selector)
        if c.screenshot and workflow.engine != js.ENGINE_BROWSER:
            problems.append(("workflow.change_detection.screenshot", "needs engine ENGINE_BROWSER"))
        for i, pattern in enumerate(c.ignore_patterns):
            try:
                re2.compile(pattern)
            except re2.error as exc:
                problems.append(
                    (f"workflow.change_detection.ignore_patterns[{i}]", f"not valid RE2: {exc}")
                )
    elif kind == "job_postings":
        p = workflow.job_postings
        selector("workflow.job_postings.item_selector", p.item_selector)
        selector("workflow.job_postings.next_page_selector", p.next_page_selector)
        for name, spec in p.fields.items():
            selector(f"workflow.job_postings.fields[{name!r}]", pagetext.split_field(spec)[0])
        if (p.key_field or "link") not in p.fields:
            problems.append(
                ("workflow.job_postings.key_field", "must name one of the fields (default link)")
            )
    elif kind == "uptime":
        u = workflow.uptime
        selector("workflow.uptime.expected_selector", u.expected_selector)
        low, high = _status_range(u)
        if low < 100 or high < low:
            problems.append(
                ("workflow.uptime.min_status", "must be 100 to 599 and at most max_status")
            )
    for i, hook in enumerate(workflow.webhooks):
        if not hook.secret:
            problems.append((f"workflow.webhooks[{i}].secret", "is required"))
    return problems


def refusal(reasons: Sequence[tuple[str, str]]) -> str:
    """Why a check was not made, in words, when the policy's reasons (code, message) for
    refusing its request say more than the executor's error: a robots.txt that could not
    be fetched is told as that, not as a failure of the target. Empty when they do not."""
    for code, message in reasons:
        if code == ROBOTS_UNAVAILABLE:
            return f"not checked: {message}"
    return ""


def judge(workflow: wf.Workflow, state: State, checked: Checked) -> Judgement:
    kind = workflow.WhichOneof("kind")
    if kind == "uptime":
        return _uptime(workflow.uptime, state, checked)
    if kind == "change_detection":
        return _change(workflow.change_detection, state, checked)
    raise ValueError(f"judge does not handle {kind}; use judge_postings")


def _result(checked: Checked, outcome: int, message: str) -> wf.WorkflowResult:
    result = wf.WorkflowResult(
        job_id=checked.job_id,
        target_url=checked.url,
        outcome=wf.ResultOutcome.ValueType(outcome),
        message=message,
    )
    if checked.finish_time is not None:
        result.check_time.FromDatetime(checked.finish_time)
    return result


def _ran(state: State, checked: Checked, target: int = OK, failures: int = 0) -> State:
    return replace(
        state,
        target=target,
        failures=failures,
        count=state.count + 1,
        last_check=checked.finish_time,
    )


def failing(state: State, checked: Checked, why: str) -> Judgement:
    """The check could not run: notified once, until a check runs again."""
    notify = wf.NOTIFICATION_KIND_CHECK_FAILING if state.target != FAILING else 0
    return Judgement(
        _result(checked, wf.RESULT_OUTCOME_CHECK_FAILING, why),
        _ran(state, checked, FAILING, state.failures + 1),
        notify,
    )


def _change(c: wf.ChangeDetection, state: State, checked: Checked) -> Judgement:
    if not checked.ran:
        return failing(state, checked, checked.reason)
    found = pagetext.lines(pagetext.parse(checked.body), c.selector)
    if found is None:
        return failing(state, checked, f"selector {c.selector!r} matches nothing on {checked.url}")
    patterns = [re2.compile(p) for p in c.ignore_patterns]
    current = tuple(line for line in found if not any(p.search(line) for p in patterns))
    if state.snapshot is None:
        result = _result(
            checked, wf.RESULT_OUTCOME_BASELINE, f"baseline stored ({len(current)} lines)"
        )
        result.page_change.line_count = len(current)
        _shown(result.page_change, checked)
        return Judgement(result, replace(_ran(state, checked), snapshot=current))
    change = diff(state.snapshot, current)
    if not change.diff:
        result = _result(checked, wf.RESULT_OUTCOME_UNCHANGED, "no change")
        result.page_change.CopyFrom(change)
        return Judgement(result, _ran(state, checked))
    if change.change_ratio < c.threshold:
        message = f"changed {change.change_ratio:.3f}, below the threshold {c.threshold:g}"
        result = _result(checked, wf.RESULT_OUTCOME_UNCHANGED, message)
        result.page_change.CopyFrom(change)
        return Judgement(result, _ran(state, checked))  # the snapshot stays: changes add up
    message = f"{len(change.added_lines)} lines added, {len(change.removed_lines)} removed"
    result = _result(checked, wf.RESULT_OUTCOME_CHANGED, message)
    result.page_change.CopyFrom(change)
    _shown(result.page_change, checked)
    return Judgement(
        result, replace(_ran(state, checked), snapshot=current), wf.NOTIFICATION_KIND_CHANGED
    )


def _shown(change: wf.PageChange, checked: Checked) -> None:
    """A stored snapshot keeps the screenshot of the page it was read from."""
    if checked.screenshot is not None:
        change.screenshot.CopyFrom(checked.screenshot)


def diff(before: tuple[str, ...], after: tuple[str, ...]) -> wf.PageChange:
    """Unified diff of two line lists, the lines added and removed, and the change ratio."""
    text = "\n".join(difflib.unified_diff(before, after, "before", "after", lineterm="", n=3))
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    added: list[str] = []
    removed: list[str] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op in {"replace", "delete"}:
            removed.extend(before[i1:i2])
        if op in {"replace", "insert"}:
            added.extend(after[j1:j2])
    ratio = 0.0 if not text else 1.0 - matcher.ratio()
    return wf.PageChange(
        diff=text,
        added_lines=added,
        removed_lines=removed,
        change_ratio=ratio,
        line_count=len(after),
    )


def _status_range(u: wf.UptimeCheck) -> tuple[int, int]:
    return u.min_status or DEFAULT_MIN_STATUS, u.max_status or DEFAULT_MAX_STATUS


def probe(u: wf.UptimeCheck, checked: Checked) -> tuple[wf.UptimeProbe, str]:
    """The measurements and the first failed expectation ('' when all held)."""
    p = wf.UptimeProbe(http_status=checked.http_status)
    p.latency.FromMilliseconds(round(checked.latency * 1000))
    if not checked.ran:
        return p, f"unreachable: {checked.reason}"
    reasons = []
    low, high = _status_range(u)
    if not low <= checked.http_status <= high:
        reasons.append(f"HTTP status {checked.http_status} is outside {low}-{high}")
    limit = u.max_latency.ToTimedelta().total_seconds() if u.HasField("max_latency") else 0
    if limit and checked.latency > limit:
        reasons.append(f"response took {checked.latency:.3f}s, more than {limit:g}s")
    tree = pagetext.parse(checked.body)
    if u.expected_text and u.expected_text not in pagetext.text(tree):
        reasons.append(f"the page does not contain {u.expected_text!r}")
    if u.expected_selector and not pagetext.select(tree, u.expected_selector):
        reasons.append(f"nothing matches {u.expected_selector!r}")
    if checked.certificate_expiry is not None and checked.finish_time is not None:
        days = (checked.certificate_expiry - checked.finish_time).total_seconds() / 86400
        p.has_certificate, p.certificate_days = True, days
        minimum = u.min_certificate_days or DEFAULT_CERTIFICATE_DAYS
        if days < minimum:
            reasons.append(f"the certificate expires in {days:.1f} days, fewer than {minimum}")
    elif checked.url.startswith("https://"):
        reasons.append("no certificate was reported for an https target")
    p.up = not reasons
    return p, "; ".join(reasons)


def _uptime(u: wf.UptimeCheck, state: State, checked: Checked) -> Judgement:
    if checked.refused:
        return failing(state, checked, checked.reason)
    measured, why = probe(u, checked)
    if measured.up:
        result = _result(checked, wf.RESULT_OUTCOME_UP, "up")
        result.uptime.CopyFrom(measured)
        notify = wf.NOTIFICATION_KIND_RECOVERED if state.target == DOWN else 0
        return Judgement(result, _ran(state, checked), notify)
    failures = (state.failures if state.target in {OK, DOWN} else 0) + 1
    down = failures >= (u.failure_threshold or 1)
    result = _result(checked, wf.RESULT_OUTCOME_DOWN, why)
    result.uptime.CopyFrom(measured)
    notify = wf.NOTIFICATION_KIND_DOWN if down and state.target != DOWN else 0
    target = DOWN if down else (state.target if state.target == DOWN else OK)
    return Judgement(result, _ran(state, checked, target, failures), notify)


def judge_postings(p: wf.JobPostings, state: State, pages: list[Checked]) -> Judgement:
    """A listing's run over its pages (the first page's job names the result)."""
    first = pages[0]
    for page in pages:
        if not page.ran:
            return failing(state, first, page.reason)
    key_field = p.key_field or "link"
    found: dict[str, dict[str, str]] = {}
    for page in pages:
        tree = pagetext.parse(page.body)
        for item in pagetext.items(tree, p.item_selector, dict(p.fields), page.url):
            key = item.fields.get(key_field, "")
            if key:
                found.setdefault(key, item.fields)
    if not found:
        return failing(
            state, first, f"item selector {p.item_selector!r} matches nothing on {first.url}"
        )
    change = wf.PostingsChange(total=len(found), pages=len(pages))
    after = replace(_ran(state, first), postings=found)
    if state.postings is None:
        result = _result(first, wf.RESULT_OUTCOME_BASELINE, f"baseline: {len(found)} postings")
        result.postings.CopyFrom(change)
        return Judgement(result, after)
    before = state.postings
    change.added.extend(wf.Posting(key=k, fields=v) for k, v in found.items() if k not in before)
    change.removed.extend(wf.Posting(key=k, fields=v) for k, v in before.items() if k not in found)
    if not change.added and not change.removed:
        result = _result(first, wf.RESULT_OUTCOME_UNCHANGED, "no new or removed postings")
        result.postings.CopyFrom(change)
        return Judgement(result, after)
    message = f"{len(change.added)} new, {len(change.removed)} removed"
    result = _result(first, wf.RESULT_OUTCOME_CHANGED, message)
    result.postings.CopyFrom(change)
    return Judgement(result, after, wf.NOTIFICATION_KIND_NEW_ITEMS)


def next_page(p: wf.JobPostings, page: Checked, number: int) -> str | None:
    """The listing's next page after page `number`, within the page limit."""
    if not p.next_page_selector or not page.ran or number >= (p.max_pages or DEFAULT_MAX_PAGES):
        return None
    return pagetext.next_link(pagetext.parse(page.body), p.next_page_selector, page.url)


def wants(hook: wf.Webhook, kind: int) -> bool:
    return kind == wf.NOTIFICATION_KIND_TEST or not hook.kinds or kind in hook.kinds
