"""Page change detection end to end: a local page the test rewrites, checked by real jobs
through the executor, judged by the orchestrator, notified to a signed webhook."""

from __future__ import annotations

import contextlib
import json
import time

import nats
import pytest
from nats.js.api import DeliverPolicy

from accord.events.v1 import envelope_pb2, workflow_events_pb2
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_kit.testing import eventually
from tests.workflow_fixtures import (
    MD,
    SECRET,
    Cluster,
    create,
    deliveries,
    hourly,
    results,
    run,
    verify,
    workflow_cluster,
)

__all__ = ["workflow_cluster"]


def page(news: str, footer: str = "© 2026", stamp: str = "Updated 10:00") -> str:
    return f"""<html><body>
      <nav>Home | About</nav>
      <main id="news"><h1>News</h1><p>{news}</p><p>Second paragraph</p>
        <p class="stamp">{stamp}</p></main>
      <footer>{footer}</footer></body></html>"""


async def test_changes_inside_the_selector_are_reported_once_and_exactly(
    workflow_cluster: Cluster,
) -> None:
    c = workflow_cluster
    c.receiver.fail_first = 2  # the first notification gets through on its third attempt
    c.site.set("/news", page("First story"))
    workflow = hourly()
    workflow.change_detection.url = f"{c.site.base}/news"
    workflow.change_detection.selector = "#news"
    workflow.change_detection.ignore_patterns.append(r"^Updated \d\d:\d\d$")
    created = await create(c, workflow)

    [baseline] = await results(c, created.workflow_id, 1)  # the creation's own run
    assert baseline.outcome == wf.RESULT_OUTCOME_BASELINE
    assert baseline.page_change.line_count == 3  # heading, two paragraphs; the stamp is ignored

    same = await run(c, created.workflow_id, 2)
    assert same.outcome == wf.RESULT_OUTCOME_UNCHANGED
    assert not same.notification

    c.site.set("/news", page("First story", footer="© 2027", stamp="Updated 11:30"))
    outside = await run(c, created.workflow_id, 3)  # outside the selector, or ignored
    assert outside.outcome == wf.RESULT_OUTCOME_UNCHANGED
    assert outside.page_change.diff == ""

    c.site.set("/news", page("Second story", stamp="Updated 12:45"))
    changed = await run(c, created.workflow_id, 4)
    assert changed.outcome == wf.RESULT_OUTCOME_CHANGED
    assert changed.notification == wf.NOTIFICATION_KIND_CHANGED
    assert list(changed.page_change.added_lines) == ["Second story"]
    assert list(changed.page_change.removed_lines) == ["First story"]
    assert "-First story\n+Second story" in changed.page_change.diff
    assert "Updated" not in changed.page_change.diff

    [delivery] = await deliveries(c, created, settled=1)
    assert delivery.state == wsp.DELIVERY_STATE_DELIVERED
    assert [a.http_status for a in delivery.attempts] == [500, 500, 204]
    assert delivery.result_id == changed.result_id
    # The receiver saw three attempts of one delivery, each signed afresh.
    assert len(c.receiver.received) == 3
    ids = {h["Accord-Webhook-Id"] for h, _ in c.receiver.received}
    assert ids == {delivery.delivery_id}
    [(headers, body)] = c.receiver.accepted
    sent = json.loads(body)
    assert sent["kind"] == "NOTIFICATION_KIND_CHANGED"
    assert sent["result"]["page_change"]["added_lines"] == ["Second story"]
    assert b"Updated" not in body  # ignored lines never reach a notification
    assert SECRET.encode() not in body
    assert all(SECRET not in value for value in headers.values())
    # A replay of the captured delivery is refused once its timestamp is old.
    assert verify(headers, body, time.time()) is None
    assert verify(headers, body, time.time() + 301) == "stale or missing timestamp"
    tampered = body.replace(b"Second story", b"Third story")
    assert verify(headers, tampered, time.time()) == "bad signature"


async def test_a_selector_that_stops_matching_is_one_check_failing_not_a_change(
    workflow_cluster: Cluster,
) -> None:
    c = workflow_cluster
    c.site.set("/news", page("First story"))
    workflow = hourly()
    workflow.change_detection.url = f"{c.site.base}/news"
    workflow.change_detection.selector = "#news"
    created = await create(c, workflow)
    await results(c, created.workflow_id, 1)

    c.site.set("/news", "<html><body><p>Redesigned: no news section</p></body></html>")
    first = await run(c, created.workflow_id, 2)
    again = await run(c, created.workflow_id, 3)
    assert first.outcome == again.outcome == wf.RESULT_OUTCOME_CHECK_FAILING
    assert "'#news' matches nothing" in first.message
    assert first.notification == wf.NOTIFICATION_KIND_CHECK_FAILING
    assert not again.notification  # notified once
    got = await c.workflows.GetWorkflow(
        wsp.GetWorkflowRequest(workflow_id=created.workflow_id), metadata=MD
    )
    assert got.workflow.status.state == wf.TARGET_STATE_CHECK_FAILING
    assert got.workflow.status.consecutive_failures == 2

    c.site.set("/news", page("First story"))
    back = await run(c, created.workflow_id, 4)
    assert back.outcome == wf.RESULT_OUTCOME_UNCHANGED  # compared with the last snapshot
    [delivery] = await deliveries(c, created, settled=1)
    assert delivery.kind == wf.NOTIFICATION_KIND_CHECK_FAILING
    assert delivery.state == wsp.DELIVERY_STATE_DELIVERED


async def test_notifications_are_events_and_secrets_stay_out_of_events_and_logs(
    workflow_cluster: Cluster, nats_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    c = workflow_cluster
    c.site.set("/news", page("First story"))
    workflow = hourly()
    workflow.change_detection.url = f"{c.site.base}/news"
    created = await create(c, workflow)
    await results(c, created.workflow_id, 1)
    c.site.set("/news", page("Second story"))
    changed = await run(c, created.workflow_id, 2)
    await c.workflows.TestWebhook(
        wsp.TestWebhookRequest(
            workflow_id=created.workflow_id,
            webhook_id=created.webhooks[0].webhook_id,
            request_id="t",
        ),
        metadata=MD,
    )
    await deliveries(c, created, settled=2)

    async def published() -> dict[str, list[envelope_pb2.EventEnvelope]] | None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe(
                "accord.orchestrator.v1.>", ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            by_type: dict[str, list[envelope_pb2.EventEnvelope]] = {}
            with contextlib.suppress(TimeoutError):
                while True:
                    msg = await sub.next_msg(timeout=1)
                    assert SECRET.encode() not in msg.data
                    event = envelope_pb2.EventEnvelope.FromString(msg.data)
                    if event.aggregate_id in {created.workflow_id, *hook_ids}:
                        by_type.setdefault(event.event_type, []).append(event)
        finally:
            await nc.close()
        done = "accord.orchestrator.v1.webhook.delivered"
        return by_type if len(by_type.get(done, [])) == 2 else None

    hook_ids = {h.webhook_id for h in created.webhooks}
    seen = await eventually(published, 30, what="the workflow's events")
    [notified] = seen["accord.orchestrator.v1.workflow.notified"]
    payload = workflow_events_pb2.WorkflowChecked()
    assert notified.payload.Unpack(payload)
    assert payload.result.result_id == changed.result_id
    assert list(payload.webhook_ids) == [created.webhooks[0].webhook_id]
    assert len(seen["accord.orchestrator.v1.workflow.checked"]) == 2
    assert len(seen["accord.orchestrator.v1.workflow.created"]) == 1
    logged = capsys.readouterr().out
    assert "webhooks.attempt" in logged  # the services' logs are what was read
    assert SECRET not in logged
