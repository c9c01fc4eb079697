"""The workflows' pure rules: page text, diffs, thresholds, uptime transitions, postings,
signatures and sealed secrets."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord_kit import jobspec
from accord_orchestrator.domain import pagetext, signing
from accord_orchestrator.domain import workflows as rules
from accord_orchestrator.secrets import SecretBox

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def checked(body: str = "", **kw: object) -> rules.Checked:
    values: dict[str, object] = {
        "job_id": "j",
        "ran": True,
        "reason": "",
        "error_code": "",
        "url": "http://127.0.0.1/p",
        "http_status": 200,
        "latency": 0.05,
        "body": body,
        "finish_time": NOW,
    }
    values.update(kw)
    return rules.Checked(**values)  # type: ignore[arg-type]


def watcher(selector: str = "", threshold: float = 0.0, *ignore: str) -> wf.Workflow:
    w = wf.Workflow(display_name="w")
    w.change_detection.url = "http://127.0.0.1/p"
    w.change_detection.selector = selector
    w.change_detection.threshold = threshold
    w.change_detection.ignore_patterns.extend(ignore)
    return w


def test_lines_break_at_blocks_not_inline_elements_and_skip_hidden_text() -> None:
    tree = pagetext.parse(
        "<html><head><title>T</title></head><body><div id=a><p>Price <b>10</b>  EUR</p>"
        "<script>var x = 1</script><ul><li>one</li><li>two<br>three</li></ul></div>"
        "<p>outside</p></body></html>"
    )
    assert pagetext.lines(tree, "#a") == ["Price 10 EUR", "one", "two", "three"]
    assert pagetext.lines(tree, "")[-1] == "outside"  # type: ignore[index]
    assert pagetext.lines(tree, "#missing") is None


def test_a_deeply_nested_page_does_not_exhaust_the_stack() -> None:
    html = "<div>" * 5000 + "deep" + "</div>" * 5000
    assert pagetext.lines(pagetext.parse(html), "") == ["deep"]


def test_diff_names_exactly_the_changed_lines() -> None:
    change = rules.diff(("a", "b", "c"), ("a", "B", "c", "d"))
    assert list(change.added_lines) == ["B", "d"]
    assert list(change.removed_lines) == ["b"]
    assert "-b\n+B" in change.diff
    assert 0 < change.change_ratio < 1
    assert rules.diff(("a",), ("a",)).diff == ""
    assert rules.diff(("a",), ("a",)).change_ratio == 0


def test_ignored_lines_never_reach_the_diff() -> None:
    w = watcher("", 0.0, r"^Updated \d+:\d+$", "visitors")
    first = rules.judge(w, rules.State(), checked("<p>News</p><p>Updated 10:00</p>"))
    assert first.result.outcome == wf.RESULT_OUTCOME_BASELINE
    assert first.state.snapshot == ("News",)
    body = "<p>Fresh news</p><p>Updated 11:00</p><p>1234 visitors</p>"
    later = rules.judge(w, first.state, checked(body))
    assert later.notify == wf.NOTIFICATION_KIND_CHANGED
    assert "Updated" not in later.result.page_change.diff
    assert "visitors" not in later.result.SerializeToString().decode(errors="ignore")


def test_a_change_below_the_threshold_keeps_the_snapshot_so_changes_add_up() -> None:
    w = watcher("", 0.3)
    lines = [f"<p>line {i}</p>" for i in range(10)]
    base = rules.judge(w, rules.State(), checked("".join(lines))).state
    small = rules.judge(w, base, checked("".join([*lines[:9], "<p>changed 9</p>"])))
    assert small.result.outcome == wf.RESULT_OUTCOME_UNCHANGED
    assert not small.notify
    assert small.state.snapshot == base.snapshot
    bigger = "".join([*lines[:6], *(f"<p>changed {i}</p>" for i in range(6, 10))])
    big = rules.judge(w, small.state, checked(bigger))
    assert big.notify == wf.NOTIFICATION_KIND_CHANGED
    assert len(big.result.page_change.removed_lines) == 4


def test_a_failing_check_is_notified_once_and_is_not_a_change() -> None:
    w = watcher("#news")
    base = rules.judge(w, rules.State(), checked("<div id=news><p>x</p></div>")).state
    gone = rules.judge(w, base, checked("<p>redesigned</p>"))
    assert gone.result.outcome == wf.RESULT_OUTCOME_CHECK_FAILING
    assert gone.notify == wf.NOTIFICATION_KIND_CHECK_FAILING
    still = rules.judge(w, gone.state, checked(ran=False, reason="connection refused"))
    assert still.result.outcome == wf.RESULT_OUTCOME_CHECK_FAILING
    assert not still.notify
    assert still.state.failures == 2
    assert still.state.snapshot == base.snapshot
    back = rules.judge(w, still.state, checked("<div id=news><p>x</p></div>"))
    assert back.result.outcome == wf.RESULT_OUTCOME_UNCHANGED
    assert back.state.target == wf.TARGET_STATE_OK


def uptime(**fields: object) -> wf.Workflow:
    w = wf.Workflow(display_name="u")
    w.uptime.url = "http://127.0.0.1/"
    for name, value in fields.items():
        setattr(w.uptime, name, value)
    return w


def test_uptime_goes_down_at_the_threshold_once_and_recovers_once() -> None:
    w = uptime(failure_threshold=3)
    state, told = rules.State(), []
    for status in (200, 500, 503, 500, 500, 200, 200, 500):
        j = rules.judge(w, state, checked("<p>ok</p>", http_status=status))
        state = j.state
        told.append(j.notify)
    assert told == [0, 0, 0, wf.NOTIFICATION_KIND_DOWN, 0, wf.NOTIFICATION_KIND_RECOVERED, 0, 0]
    assert state.target == wf.TARGET_STATE_OK
    assert state.failures == 1


def test_uptime_reasons() -> None:
    w = uptime(expected_text="Welcome", expected_selector="#main", min_certificate_days=10)
    w.uptime.max_latency.FromMilliseconds(100)
    ok = "<div id=main>Welcome</div>"
    expiry = NOW + timedelta(days=30)
    url = "https://127.0.0.1/"
    up = rules.judge(w, rules.State(), checked(ok, url=url, certificate_expiry=expiry))
    assert up.result.outcome == wf.RESULT_OUTCOME_UP
    assert round(up.result.uptime.certificate_days) == 30
    cases = {
        "more than 0.1s": checked(ok, url=url, certificate_expiry=expiry, latency=0.5),
        "does not contain 'Welcome'": checked(
            "<div id=main>Hi</div>", url=url, certificate_expiry=expiry
        ),
        "nothing matches '#main'": checked("<p>Welcome</p>", url=url, certificate_expiry=expiry),
        "expires in 3.0 days, fewer than 10": checked(
            ok, url=url, certificate_expiry=NOW + timedelta(days=3)
        ),
        "no certificate was reported": checked(ok, url=url),
        "unreachable: refused": checked(ran=False, reason="refused"),
    }
    for reason, case in cases.items():
        j = rules.judge(w, rules.State(), case)
        assert j.result.outcome == wf.RESULT_OUTCOME_DOWN, reason
        assert reason in j.result.message, (reason, j.result.message)
    refused = rules.judge(w, rules.State(), checked(ran=False, reason="policy", refused=True))
    assert refused.result.outcome == wf.RESULT_OUTCOME_CHECK_FAILING


def test_postings_report_new_and_removed_by_key() -> None:
    p = wf.JobPostings(url="http://127.0.0.1/jobs", item_selector="li")
    p.fields.update({"title": "a", "link": "a@href"})

    def page(*links: str) -> rules.Checked:
        items = "".join(f'<li><a href="{x}">{x.upper()}</a></li>' for x in links)
        return checked(f"<ul>{items}</ul>", url="http://127.0.0.1/jobs")

    base = rules.judge_postings(p, rules.State(), [page("/a", "/b"), page("/c")])
    assert base.result.outcome == wf.RESULT_OUTCOME_BASELINE
    assert base.result.postings.total == 3
    later = rules.judge_postings(p, base.state, [page("/a", "/d"), page("/c")])
    assert [x.key for x in later.result.postings.added] == ["http://127.0.0.1/d"]
    assert [x.key for x in later.result.postings.removed] == ["http://127.0.0.1/b"]
    assert later.notify == wf.NOTIFICATION_KIND_NEW_ITEMS
    empty = rules.judge_postings(p, later.state, [checked("<p>no list</p>")])
    assert empty.result.outcome == wf.RESULT_OUTCOME_CHECK_FAILING


def test_state_survives_its_json_form() -> None:
    state = rules.State(
        target=wf.TARGET_STATE_DOWN,
        failures=2,
        count=7,
        last_check=NOW,
        snapshot=("a", "b"),
        postings={"k": {"title": "t"}},
    )
    assert rules.State.from_json(state.to_json()) == state


def test_a_signature_verifies_only_fresh_and_untouched() -> None:
    body = b'{"kind":"NOTIFICATION_KIND_CHANGED"}'
    stamp = 1_800_000_000
    signature = signing.sign("s3cret-s3cret-s3cret", stamp, body)
    assert signature.startswith("v1=")
    key = "s3cret-s3cret-s3cret"
    assert signing.verify(key, str(stamp), body, signature, now=stamp + 10) is None
    assert signing.verify(key, str(stamp), body, signature, now=stamp + 301) is not None
    assert signing.verify(key, str(stamp), body + b" ", signature, now=stamp) is not None
    assert signing.verify("another-secret-x", str(stamp), body, signature, now=stamp) is not None


def test_sealed_secrets_open_only_for_their_webhook() -> None:
    box = SecretBox(os.urandom(32))
    sealed = box.seal("the secret", "hook-1")
    assert b"the secret" not in sealed
    assert box.open(sealed, "hook-1") == "the secret"
    with pytest.raises(InvalidTag):
        box.open(sealed, "hook-2")


@pytest.mark.parametrize("engine", [js.ENGINE_HTTP, js.ENGINE_BROWSER])
@pytest.mark.parametrize("kind", ["change_detection", "job_postings", "uptime"])
def test_the_jobs_a_workflow_runs_pass_the_submission_check(kind: str, engine: int) -> None:
    w = wf.Workflow(display_name="w", engine=engine)  # type: ignore[arg-type]
    getattr(w, kind).url = "http://127.0.0.1/p"
    if kind == "change_detection":
        w.change_detection.screenshot = engine == js.ENGINE_BROWSER
    for page in (1, 2):
        assert jobspec.problems(rules.job_spec(w, page=page)) == []
