"""WorkflowService's contract: bad input for every RPC, idempotency, paging, tenancy,
pause and resume, and test deliveries (signed, logged, policed like any request)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web

from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_kit.net import free_port
from accord_kit.testing import as_tenant, field_violations, refused
from tests.workflow_fixtures import (
    MD,
    SECRET,
    Cluster,
    create,
    hourly,
    results,
    verify,
    workflow_cluster,
)

__all__ = ["workflow_cluster"]  # the fixture the tests use
OTHER = as_tenant("other")
BAD_ID = "not-a-uuid"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def watch(c: Cluster) -> wf.Workflow:
    workflow = hourly()
    workflow.change_detection.url = f"{c.site.base}/page"
    return workflow


async def bad_create(c: Cluster, workflow: wf.Workflow, request_id: str = "r1") -> dict[str, str]:
    err = await refused(
        c.workflows.CreateWorkflow(
            wsp.CreateWorkflowRequest(request_id=request_id, workflow=workflow), metadata=MD
        )
    )
    assert err.code() == INVALID, err
    return field_violations(err)


async def test_create_refuses_bad_input_and_stores_nothing(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    assert "request_id" in await bad_create(c, watch(c), request_id="")
    no_kind = hourly()
    assert "workflow.kind" in await bad_create(c, no_kind)
    no_calendar = watch(c)
    no_calendar.ClearField("calendar")
    assert "workflow.calendar" in await bad_create(c, no_calendar)
    bad_cron = watch(c)
    bad_cron.calendar.cron = "not a cron expression"
    assert any(f.startswith("workflow.calendar") for f in await bad_create(c, bad_cron))
    ftp = watch(c)
    ftp.change_detection.url = "ftp://127.0.0.1/x"
    assert "workflow.change_detection.url" in await bad_create(c, ftp)
    selector = watch(c)
    selector.change_detection.selector = "div[["
    assert "workflow.change_detection.selector" in await bad_create(c, selector)
    pattern = watch(c)
    pattern.change_detection.ignore_patterns.append("(unclosed")
    assert "workflow.change_detection.ignore_patterns[0]" in await bad_create(c, pattern)
    threshold = watch(c)
    threshold.change_detection.threshold = 1.5
    assert "workflow.change_detection.threshold" in await bad_create(c, threshold)
    secret = watch(c)
    secret.webhooks.add(url=c.receiver.url, secret="short")
    assert "workflow.webhooks[0].secret" in await bad_create(c, secret)
    hook_url = watch(c)
    hook_url.webhooks.add(url="mailto:someone@example.com", secret=SECRET)
    assert "workflow.webhooks[0].url" in await bad_create(c, hook_url)
    key = hourly()
    key.job_postings.url = f"{c.site.base}/jobs"
    key.job_postings.item_selector = "li"
    key.job_postings.fields["title"] = ".title"  # no `link`, the default key
    assert "workflow.job_postings.key_field" in await bad_create(c, key)
    statuses = hourly()
    statuses.uptime.url = f"{c.site.base}/"
    statuses.uptime.min_status, statuses.uptime.max_status = 500, 200
    assert "workflow.uptime.min_status" in await bad_create(c, statuses)
    listed = await c.workflows.ListWorkflows(wsp.ListWorkflowsRequest(), metadata=MD)
    assert list(listed.workflows) == []  # nothing half-written


async def test_idempotent_create_and_names(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    workflow = watch(c)
    workflow.webhooks.add(url=c.receiver.url, secret=SECRET)
    request = wsp.CreateWorkflowRequest(request_id="same", workflow=workflow)
    first = (await c.workflows.CreateWorkflow(request, metadata=MD)).workflow
    again = (await c.workflows.CreateWorkflow(request, metadata=MD)).workflow
    assert first.workflow_id == again.workflow_id
    assert first.webhooks[0].webhook_id
    assert not first.webhooks[0].secret
    other_secret = wf.Workflow()
    other_secret.CopyFrom(workflow)
    other_secret.webhooks[0].secret = SECRET + "-changed"
    err = await refused(
        c.workflows.CreateWorkflow(
            wsp.CreateWorkflowRequest(request_id="same", workflow=other_secret), metadata=MD
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    err = await refused(
        c.workflows.CreateWorkflow(
            wsp.CreateWorkflowRequest(request_id="another", workflow=workflow), metadata=MD
        )
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS  # the name is taken


async def test_every_rpc_refuses_bad_ids_and_other_tenants(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    c.site.set("/page", "<p>hello</p>")
    made = await create(c, watch(c))
    wid, hid = made.workflow_id, made.webhooks[0].webhook_id
    rid = uuid.uuid4().hex
    w = c.workflows
    calls = {
        "GetWorkflow": lambda i, md: w.GetWorkflow(
            wsp.GetWorkflowRequest(workflow_id=i), metadata=md
        ),
        "DeleteWorkflow": lambda i, md: w.DeleteWorkflow(
            wsp.DeleteWorkflowRequest(workflow_id=i), metadata=md
        ),
        "PauseWorkflow": lambda i, md: w.PauseWorkflow(
            wsp.PauseWorkflowRequest(workflow_id=i), metadata=md
        ),
        "ResumeWorkflow": lambda i, md: w.ResumeWorkflow(
            wsp.ResumeWorkflowRequest(workflow_id=i), metadata=md
        ),
        "RunWorkflow": lambda i, md: w.RunWorkflow(
            wsp.RunWorkflowRequest(workflow_id=i, request_id=rid), metadata=md
        ),
        "ListWorkflowResults": lambda i, md: w.ListWorkflowResults(
            wsp.ListWorkflowResultsRequest(workflow_id=i), metadata=md
        ),
        "ListWebhookDeliveries": lambda i, md: w.ListWebhookDeliveries(
            wsp.ListWebhookDeliveriesRequest(workflow_id=i, webhook_id=hid), metadata=md
        ),
        "TestWebhook": lambda i, md: w.TestWebhook(
            wsp.TestWebhookRequest(workflow_id=i, webhook_id=hid, request_id=rid), metadata=md
        ),
    }
    for name, call in calls.items():
        err = await refused(call(BAD_ID, MD))
        assert err.code() == INVALID, name
        assert "workflow_id" in field_violations(err), name
        err = await refused(call(wid, OTHER))
        assert err.code() == grpc.StatusCode.NOT_FOUND, name
    listed = await w.ListWorkflows(wsp.ListWorkflowsRequest(), metadata=OTHER)
    assert list(listed.workflows) == []

    for request in (
        wsp.RunWorkflowRequest(workflow_id=wid),
        wsp.TestWebhookRequest(workflow_id=wid, webhook_id=hid),
    ):
        method = w.RunWorkflow if isinstance(request, wsp.RunWorkflowRequest) else w.TestWebhook
        err = await refused(method(request, metadata=MD))  # type: ignore[operator]
        assert "request_id" in field_violations(err)
    for bad in (wsp.ListWorkflowsRequest(page_size=-1), wsp.ListWorkflowsRequest(page_size=5000)):
        assert "page_size" in field_violations(await refused(w.ListWorkflows(bad, metadata=MD)))
    err = await refused(w.ListWorkflows(wsp.ListWorkflowsRequest(page_token="junk"), metadata=MD))
    assert "page_token" in field_violations(err)
    err = await refused(
        w.ListWorkflowResults(
            wsp.ListWorkflowResultsRequest(workflow_id=wid, page_size=1001), metadata=MD
        )
    )
    assert "page_size" in field_violations(err)
    err = await refused(
        w.ListWebhookDeliveries(
            wsp.ListWebhookDeliveriesRequest(workflow_id=wid, webhook_id=BAD_ID), metadata=MD
        )
    )
    assert "webhook_id" in field_violations(err)
    err = await refused(
        w.TestWebhook(
            wsp.TestWebhookRequest(workflow_id=wid, webhook_id=str(uuid.uuid4()), request_id=rid),
            metadata=MD,
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND  # a webhook of no workflow of ours
    err = await refused(
        w.PauseWorkflow(wsp.PauseWorkflowRequest(workflow_id=wid, note="x" * 1025), metadata=MD)
    )
    assert "note" in field_violations(err)


async def test_pause_resume_delete_and_paging(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    c.site.set("/page", "<p>hello</p>")
    made = [await create(c, watch(c), hooked=False) for _ in range(3)]
    pause = wsp.PauseWorkflowRequest(
        workflow_id=made[0].workflow_id, note="maintenance", request_id="p1"
    )
    paused = await c.workflows.PauseWorkflow(pause, metadata=MD)
    assert paused.workflow.paused
    assert await c.workflows.PauseWorkflow(pause, metadata=MD) == paused  # the first answer
    resumed = await c.workflows.ResumeWorkflow(
        wsp.ResumeWorkflowRequest(workflow_id=made[0].workflow_id), metadata=MD
    )
    assert not resumed.workflow.paused
    seen, token = [], ""
    for _ in range(5):
        page = await c.workflows.ListWorkflows(
            wsp.ListWorkflowsRequest(page_size=2, page_token=token), metadata=MD
        )
        seen += [x.workflow_id for x in page.workflows]
        token = page.next_page_token
        if not token:
            break
    assert seen == [m.workflow_id for m in made]
    await results(c, made[1].workflow_id, 1)
    delete = wsp.DeleteWorkflowRequest(workflow_id=made[1].workflow_id, request_id="d1")
    await c.workflows.DeleteWorkflow(delete, metadata=MD)
    await c.workflows.DeleteWorkflow(delete, metadata=MD)  # a repeat: done once, not NOT_FOUND
    err = await refused(
        c.workflows.GetWorkflow(
            wsp.GetWorkflowRequest(workflow_id=made[1].workflow_id), metadata=MD
        )
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture
async def canary() -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver on 127.0.0.2, which no policy of the test allows."""
    hits: list[str] = []

    async def hit(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hit)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port("127.0.0.2")
    await web.TCPSite(runner, "127.0.0.2", port).start()
    yield f"http://127.0.0.2:{port}/hook", hits
    await runner.cleanup()


async def test_test_deliveries_are_signed_logged_and_policed(
    workflow_cluster: Cluster, canary: tuple[str, list[str]]
) -> None:
    c = workflow_cluster
    c.site.set("/page", "<p>hello</p>")
    workflow = watch(c)
    workflow.webhooks.add(url=c.receiver.url, secret=SECRET)
    workflow.webhooks.add(url=canary[0], secret=SECRET)
    made = await create(c, workflow, hooked=False)
    good, refused_hook = made.webhooks[0].webhook_id, made.webhooks[1].webhook_id

    request = wsp.TestWebhookRequest(
        workflow_id=made.workflow_id, webhook_id=good, request_id="test-1"
    )
    delivered = (await c.workflows.TestWebhook(request, metadata=MD)).delivery
    assert delivered.state == wsp.DELIVERY_STATE_DELIVERED
    assert delivered.kind == wf.NOTIFICATION_KIND_TEST
    assert [a.http_status for a in delivered.attempts] == [204]
    again = (await c.workflows.TestWebhook(request, metadata=MD)).delivery
    assert again.delivery_id == delivered.delivery_id
    assert len(c.receiver.accepted) == 1  # the same request id sends once
    [(headers, body)] = c.receiver.accepted
    assert headers["Accord-Webhook-Event"] == "NOTIFICATION_KIND_TEST"
    assert verify(headers, body, time.time()) is None

    c.receiver.fail_first = 10**6  # from now on it answers 500
    failed = (
        await c.workflows.TestWebhook(
            wsp.TestWebhookRequest(
                workflow_id=made.workflow_id, webhook_id=good, request_id="test-2"
            ),
            metadata=MD,
        )
    ).delivery
    assert failed.state == wsp.DELIVERY_STATE_FAILED
    assert [a.http_status for a in failed.attempts] == [500]

    denied = (
        await c.workflows.TestWebhook(
            wsp.TestWebhookRequest(
                workflow_id=made.workflow_id, webhook_id=refused_hook, request_id="test-3"
            ),
            metadata=MD,
        )
    ).delivery
    assert denied.state == wsp.DELIVERY_STATE_FAILED
    assert "policy refused" in denied.attempts[0].error_message
    assert canary[1] == []  # the refused host never saw a request

    log = await c.workflows.ListWebhookDeliveries(
        wsp.ListWebhookDeliveriesRequest(
            workflow_id=made.workflow_id, webhook_id=good, page_size=1
        ),
        metadata=MD,
    )
    assert [d.delivery_id for d in log.deliveries] == [failed.delivery_id]  # newest first
    assert log.next_page_token
