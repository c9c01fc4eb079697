"""UpdateWorkflow through the generated stubs: target settings, calendar and webhooks change
under the workflow's etag, the schedule follows, a rotated secret signs the next delivery,
and a stale etag or bad input changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
import uuid

import grpc
from google.protobuf import field_mask_pb2

from accord.orchestrator.v1 import schedule_service_pb2 as ssp
from accord.orchestrator.v1 import schedule_service_pb2_grpc
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_kit.testing import as_tenant, channel, error_info, field_violations, refused
from tests.workflow_fixtures import (
    MD,
    SECRET,
    Cluster,
    create,
    hourly,
    results,
    run,
    verify,
    workflow_cluster,
)

__all__ = ["workflow_cluster"]  # the fixture the tests use
ROTATED = "a-rotated-webhook-secret-of-the-test"


def page(news: str) -> str:
    return f"<html><body><main id='news'><p>{news}</p></main><aside>{news}</aside></body></html>"


def signed_with(secret: str, headers: dict[str, str], body: bytes) -> bool:
    stamp = headers.get("Accord-Webhook-Timestamp", "")
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("Accord-Webhook-Signature", ""), f"v1={mac}")


def update(
    workflow: wf.Workflow, paths: list[str], request_id: str = ""
) -> wsp.UpdateWorkflowRequest:
    return wsp.UpdateWorkflowRequest(
        request_id=request_id or uuid.uuid4().hex,
        workflow=workflow,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


async def get(c: Cluster, workflow_id: str) -> wf.Workflow:
    reply = await c.workflows.GetWorkflow(
        wsp.GetWorkflowRequest(workflow_id=workflow_id), metadata=MD
    )
    return reply.workflow


async def schedule_of(c: Cluster, workflow: wf.Workflow) -> ssp.GetScheduleResponse:
    async with channel(c.port) as ch:
        return await schedule_service_pb2_grpc.ScheduleServiceStub(ch).GetSchedule(
            ssp.GetScheduleRequest(schedule_id=workflow.schedule_id), metadata=MD
        )


async def watched(c: Cluster) -> wf.Workflow:
    c.site.set("/news", page("First story"))
    c.site.set("/other", page("Other story"))
    workflow = hourly()
    workflow.change_detection.url = f"{c.site.base}/news"
    workflow.change_detection.selector = "main"
    made = await create(c, workflow)
    await results(c, made.workflow_id, 1)
    return made


async def test_update_changes_target_calendar_and_rotates_a_secret(
    workflow_cluster: Cluster,
) -> None:
    c = workflow_cluster
    made = await watched(c)
    hook = made.webhooks[0]
    change = wf.Workflow(workflow_id=made.workflow_id, etag=made.etag)
    change.change_detection.url = f"{c.site.base}/other"
    change.change_detection.selector = "aside"
    change.change_detection.threshold = 0.5
    change.calendar.interval.seconds = 7200
    change.webhooks.add(webhook_id=hook.webhook_id, url=hook.url, secret=ROTATED)
    paths = [
        "change_detection.url",
        "change_detection.selector",
        "change_detection.threshold",
        "calendar",
        "webhooks",
    ]
    request = update(change, paths)
    updated = (await c.workflows.UpdateWorkflow(request, metadata=MD)).workflow

    assert updated.etag
    assert updated.etag != made.etag
    assert updated.change_detection.url == f"{c.site.base}/other"
    assert updated.change_detection.selector == "aside"
    assert updated.change_detection.threshold == 0.5
    assert updated.calendar.interval.seconds == 7200
    assert [h.webhook_id for h in updated.webhooks] == [hook.webhook_id]  # kept, not new
    assert not updated.webhooks[0].secret
    assert updated.display_name == made.display_name  # not in the mask
    assert (await get(c, made.workflow_id)).etag == updated.etag

    # The schedule follows: its calendar and the job it fires.
    schedule = (await schedule_of(c, made)).schedule
    assert schedule.spec.interval.seconds == 7200
    assert schedule.job_template.steps[0].request.url == f"{c.site.base}/other"

    # What is compared changed, so the next check is a new baseline, not a change.
    after = await run(c, made.workflow_id, 2)
    assert after.outcome == wf.RESULT_OUTCOME_BASELINE
    assert after.target_url == f"{c.site.base}/other"

    # The rotated secret signs the next delivery; the old one no longer does.
    test = wsp.TestWebhookRequest(
        workflow_id=made.workflow_id, webhook_id=hook.webhook_id, request_id="after-rotation"
    )
    await c.workflows.TestWebhook(test, metadata=MD)
    headers, body = c.receiver.received[-1]
    assert signed_with(ROTATED, headers, body)
    assert verify(headers, body, time.time()) == "bad signature"  # the old secret's check

    # The same request again is answered, not applied again; reusing its id for another
    # update is ALREADY_EXISTS.
    again = (await c.workflows.UpdateWorkflow(request, metadata=MD)).workflow
    assert again.etag == updated.etag
    other = wf.Workflow(workflow_id=made.workflow_id, etag=updated.etag, display_name="x")
    err = await refused(
        c.workflows.UpdateWorkflow(update(other, ["display_name"], request.request_id), metadata=MD)
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_a_stale_etag_is_aborted_and_changes_nothing(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    made = await watched(c)
    first = wf.Workflow(workflow_id=made.workflow_id, etag=made.etag)
    first.change_detection.selector = "aside"
    current = (
        await c.workflows.UpdateWorkflow(update(first, ["change_detection.selector"]), metadata=MD)
    ).workflow
    late = wf.Workflow(workflow_id=made.workflow_id, etag=made.etag, display_name="late")
    err = await refused(c.workflows.UpdateWorkflow(update(late, ["display_name"]), metadata=MD))
    assert err.code() == grpc.StatusCode.ABORTED
    assert error_info(err)["etag"] == current.etag
    assert await get(c, made.workflow_id) == current
    # Another tenant cannot see it, etag or not.
    late.etag = current.etag
    err = await refused(
        c.workflows.UpdateWorkflow(update(late, ["display_name"]), metadata=as_tenant("other"))
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_updates_are_invalid_argument_and_change_nothing(
    workflow_cluster: Cluster,
) -> None:
    c = workflow_cluster
    made = await watched(c)
    before = await get(c, made.workflow_id)
    schedule_before = (await schedule_of(c, made)).schedule
    hook = made.webhooks[0]

    def change() -> wf.Workflow:
        return wf.Workflow(workflow_id=made.workflow_id, etag=made.etag)

    async def bad(workflow: wf.Workflow, paths: list[str], request_id: str = "") -> dict[str, str]:
        err = await refused(
            c.workflows.UpdateWorkflow(update(workflow, paths, request_id), metadata=MD)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        return field_violations(err)

    selector = change()
    selector.change_detection.selector = "div[["
    assert "workflow.change_detection.selector" in await bad(
        selector, ["change_detection.selector"], request_id="req-selector"
    )
    url = change()
    url.change_detection.url = "ftp://127.0.0.1/x"
    assert "workflow.change_detection.url" in await bad(url, ["change_detection.url"])
    pattern = change()
    pattern.change_detection.ignore_patterns.append("(unclosed")
    found = await bad(pattern, ["change_detection.ignore_patterns"])
    assert "workflow.change_detection.ignore_patterns[0]" in found
    threshold = change()
    threshold.change_detection.threshold = 1.5
    assert "workflow.change_detection.threshold" in await bad(
        threshold, ["change_detection.threshold"]
    )
    screenshot = change()  # screenshots need the browser engine
    screenshot.change_detection.screenshot = True
    assert "workflow.change_detection.screenshot" in await bad(
        screenshot, ["change_detection.screenshot"]
    )
    cron = change()
    cron.calendar.cron = "not a cron expression"
    assert any(f.startswith("workflow.calendar") for f in await bad(cron, ["calendar"]))
    no_calendar = change()
    assert "workflow.calendar" in await bad(no_calendar, ["calendar"])
    new_hook = change()
    new_hook.webhooks.add(webhook_id=hook.webhook_id, url=hook.url)
    new_hook.webhooks.add(url=c.receiver.url)  # a new webhook needs a secret
    assert "workflow.webhooks[1].secret" in await bad(new_hook, ["webhooks"])
    foreign = change()
    foreign.webhooks.add(webhook_id=str(uuid.uuid4()), url=c.receiver.url, secret=SECRET)
    assert "workflow.webhooks[0].webhook_id" in await bad(foreign, ["webhooks"])
    short = change()
    short.webhooks.add(webhook_id=hook.webhook_id, url=hook.url, secret="short")
    assert "workflow.webhooks[0].secret" in await bad(short, ["webhooks"])
    kind = change()
    kind.uptime.url = f"{c.site.base}/"
    assert "update_mask" in await bad(kind, ["uptime"])
    assert "update_mask" in await bad(change(), ["status"])
    assert "update_mask" in await bad(change(), [])
    assert "workflow.etag" in await bad(wf.Workflow(workflow_id=made.workflow_id), ["engine"])
    assert "workflow.workflow_id" in await bad(wf.Workflow(etag=made.etag), ["engine"])
    name = change()
    name.display_name = "x" * 201
    assert "workflow.display_name" in await bad(name, ["display_name"])
    assert "request_id" in await bad(change(), ["engine"], request_id="not allowed!")
    err = await refused(
        c.workflows.UpdateWorkflow(
            wsp.UpdateWorkflowRequest(request_id="r", workflow=change()), metadata=MD
        )
    )
    assert "update_mask" in field_violations(err)

    assert await get(c, made.workflow_id) == before  # nothing changed, etag included
    assert (await schedule_of(c, made)).schedule == schedule_before
    # A refused request's id was not spent: a good update with it now works.
    fine = change()
    fine.change_detection.selector = "aside"
    done = await c.workflows.UpdateWorkflow(
        update(fine, ["change_detection.selector"], request_id="req-selector"), metadata=MD
    )
    assert done.workflow.change_detection.selector == "aside"


async def test_concurrent_updates_apply_once_and_one_etag_wins(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    made = await watched(c)
    renamed = wf.Workflow(workflow_id=made.workflow_id, etag=made.etag, display_name="renamed")
    same = update(renamed, ["display_name"], request_id="one-update")
    replies = await asyncio.gather(
        *(c.workflows.UpdateWorkflow(same, metadata=MD) for _ in range(10))
    )
    assert len({r.workflow.etag for r in replies}) == 1  # applied once, answered ten times
    etag = replies[0].workflow.etag

    def rival(i: int) -> wsp.UpdateWorkflowRequest:
        return update(
            wf.Workflow(workflow_id=made.workflow_id, etag=etag, display_name=f"rival-{i}"),
            ["display_name"],
        )

    raced = await asyncio.gather(
        *(c.workflows.UpdateWorkflow(rival(i), metadata=MD) for i in range(5)),
        return_exceptions=True,
    )
    won = [r for r in raced if isinstance(r, wsp.UpdateWorkflowResponse)]
    lost = [r for r in raced if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == 1
    assert [e.code() for e in lost] == [grpc.StatusCode.ABORTED] * 4
    assert (await get(c, made.workflow_id)).display_name == won[0].workflow.display_name


async def test_a_removed_webhook_goes_with_its_delivery_log(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    made = await watched(c)
    hook = made.webhooks[0]
    change = wf.Workflow(workflow_id=made.workflow_id, etag=made.etag)
    change.webhooks.add(url=c.receiver.url, secret=ROTATED)  # a new one instead
    updated = (await c.workflows.UpdateWorkflow(update(change, ["webhooks"]), metadata=MD)).workflow
    [added] = updated.webhooks
    assert added.webhook_id != hook.webhook_id
    err = await refused(
        c.workflows.ListWebhookDeliveries(
            wsp.ListWebhookDeliveriesRequest(
                workflow_id=made.workflow_id, webhook_id=hook.webhook_id
            ),
            metadata=MD,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    sent = await c.workflows.TestWebhook(
        wsp.TestWebhookRequest(
            workflow_id=made.workflow_id, webhook_id=added.webhook_id, request_id="new-hook"
        ),
        metadata=MD,
    )
    headers, body = c.receiver.received[-1]
    assert headers["Accord-Webhook-Id"] == sent.delivery.delivery_id
    assert signed_with(ROTATED, headers, body)
