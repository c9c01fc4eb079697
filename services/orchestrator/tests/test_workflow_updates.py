"""The pure rules of workflow updates and browser checks: what a mask may name, when an
update makes the next check a new baseline, the browser job, screenshots, and how a
robots.txt that could not be fetched is told."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from google.protobuf import field_mask_pb2

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord_orchestrator.domain import workflow_updates as updates
from accord_orchestrator.domain import workflows as rules

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def watcher(**fields: object) -> wf.Workflow:
    w = wf.Workflow(display_name="w")
    w.change_detection.url = "http://127.0.0.1/p"
    for name, value in fields.items():
        setattr(w.change_detection, name, value)
    return w


def test_a_mask_names_the_workflows_own_fields_only() -> None:
    assert updates.mask_problems("change_detection", ["calendar", "change_detection.url"]) == []
    assert updates.mask_problems("uptime", ["uptime", "webhooks", "display_name"]) == []
    [(field, why)] = updates.mask_problems("change_detection", ["uptime.url"])
    assert field == "update_mask"
    assert "kind does not change" in why
    for bad in ([], ["status"], ["change_detection.nope"], ["calendar.cron"], [""]):
        assert [f for f, _ in updates.mask_problems("change_detection", bad)] == ["update_mask"]


def test_merging_replaces_what_the_mask_names_and_keeps_the_rest() -> None:
    current = watcher(selector="main", threshold=0.2)
    current.change_detection.ignore_patterns.extend(["a", "b"])
    update = watcher(selector="aside")
    update.change_detection.ignore_patterns.append("c")
    mask = field_mask_pb2.FieldMask(
        paths=["change_detection.selector", "change_detection.ignore_patterns"]
    )
    merged = updates.merged(current, update, mask)
    assert merged.change_detection.selector == "aside"
    assert list(merged.change_detection.ignore_patterns) == ["c"]  # replaced, not appended
    assert merged.change_detection.threshold == 0.2


def test_webhook_ids_must_be_the_workflows_and_named_once() -> None:
    hooks = [wf.Webhook(webhook_id="a"), wf.Webhook(), wf.Webhook(webhook_id="a")]
    assert updates.hook_problems(hooks, {"a"}) == [
        ("workflow.webhooks[2].webhook_id", "names a webhook twice")
    ]
    [(field, _)] = updates.hook_problems([wf.Webhook(webhook_id="z")], {"a"})
    assert field == "workflow.webhooks[0].webhook_id"


def test_changing_what_is_compared_rebaselines_and_judging_only_fields_do_not() -> None:
    state = rules.State(target=rules.OK, count=3, snapshot=("one",))
    before = watcher(selector="main")
    assert updates.rebaselined(before, watcher(selector="main", threshold=0.5), state) == state
    assert updates.rebaselined(before, watcher(selector="aside"), state).snapshot is None
    browser = watcher(selector="main")
    browser.engine = js.ENGINE_BROWSER
    moved = updates.rebaselined(before, browser, state)
    assert moved == replace(state, snapshot=None)  # the count and state are kept


def test_the_browser_job_reads_the_rendered_page_and_a_screenshot_when_asked() -> None:
    plain = [s.WhichOneof("action") for s in rules.job_spec(watcher(screenshot=True)).steps]
    assert plain == ["request"]
    w = watcher(screenshot=True)
    w.engine = js.ENGINE_BROWSER
    steps = rules.job_spec(w).steps
    assert [(s.name, s.WhichOneof("action")) for s in steps] == [
        (rules.PAGE_STEP, "request"),
        (rules.RENDERED_STEP, "extract"),
        (rules.SCREENSHOT_STEP, "screenshot"),
    ]
    assert steps[1].extract.html
    assert steps[2].screenshot.full_page
    assert rules.check_definition(watcher(screenshot=True)) == [
        ("workflow.change_detection.screenshot", "needs engine ENGINE_BROWSER")
    ]
    assert rules.check_definition(w) == []


def test_a_screenshot_is_kept_with_the_baseline_and_changes_only() -> None:
    w = watcher()
    shot = job_result_pb2.ArtifactRef(artifact_id="f" * 64, content_type="image/png")

    def judged(body: str, state: rules.State) -> rules.Judgement:
        checked = rules.Checked(
            "j",
            True,
            "",
            "",
            "http://127.0.0.1/p",
            200,
            body=body,
            finish_time=NOW,
            screenshot=shot,
        )
        return rules.judge(w, state, checked)

    baseline = judged("<p>one</p>", rules.State())
    assert baseline.result.page_change.screenshot == shot
    same = judged("<p>one</p>", baseline.state)
    assert not same.result.page_change.HasField("screenshot")
    changed = judged("<p>two</p>", same.state)
    assert changed.result.page_change.screenshot == shot


def test_a_robots_txt_that_could_not_be_fetched_is_told_as_that() -> None:
    told = rules.refusal([("ROBOTS_UNAVAILABLE", "robots.txt of X could not be fetched")])
    assert told == "not checked: robots.txt of X could not be fetched"
    assert rules.refusal([("ROBOTS_DISALLOWED", "robots.txt of X disallows it")]) == ""
    assert rules.refusal([]) == ""
