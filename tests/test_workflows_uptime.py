"""Uptime checks end to end: each way of being down gives "down" with its reason, the
failure threshold holds notifications back, and recovery notifies once."""

from __future__ import annotations

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import workflow_pb2 as wf
from tests.workflow_fixtures import (
    Cluster,
    create,
    deliveries,
    hourly,
    results,
    run,
    workflow_cluster,
)

__all__ = ["workflow_cluster"]  # the fixture the tests use

HEALTHY = "<html><body><h1>Status</h1><p id='ok'>All systems operational</p></body></html>"


async def test_down_for_each_reason_and_recovered_once(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    c.site.set("/health", HEALTHY)
    workflow = hourly()
    workflow.uptime.url = f"{c.site.base}/health"
    workflow.uptime.expected_text = "All systems operational"
    workflow.uptime.expected_selector = "#ok"
    workflow.uptime.max_latency.FromMilliseconds(400)
    workflow.uptime.failure_threshold = 2
    created = await create(c, workflow)
    [first] = await results(c, created.workflow_id, 1)
    assert first.outcome == wf.RESULT_OUTCOME_UP
    assert first.uptime.http_status == 200
    assert first.uptime.up

    c.site.set("/health", HEALTHY, status=500)
    once = await run(c, created.workflow_id, 2)
    assert once.outcome == wf.RESULT_OUTCOME_DOWN
    assert "HTTP status 500 is outside 200-399" in once.message
    assert not once.notification  # one failure is below the threshold of two
    twice = await run(c, created.workflow_id, 3)
    assert twice.notification == wf.NOTIFICATION_KIND_DOWN
    thrice = await run(c, created.workflow_id, 4)
    assert thrice.outcome == wf.RESULT_OUTCOME_DOWN
    assert not thrice.notification  # down is told once

    c.site.set("/health", HEALTHY)
    back = await run(c, created.workflow_id, 5)
    assert back.outcome == wf.RESULT_OUTCOME_UP
    assert back.notification == wf.NOTIFICATION_KIND_RECOVERED
    still = await run(c, created.workflow_id, 6)
    assert still.outcome == wf.RESULT_OUTCOME_UP
    assert not still.notification  # recovery is told once

    c.site.set("/health", HEALTHY, delay=0.6)
    slow = await run(c, created.workflow_id, 7)
    assert slow.outcome == wf.RESULT_OUTCOME_DOWN
    assert "more than 0.4s" in slow.message
    assert slow.uptime.latency.ToMilliseconds() > 400

    c.site.set("/health", HEALTHY.replace("All systems operational", "Degraded"))
    missing = await run(c, created.workflow_id, 8)
    assert missing.outcome == wf.RESULT_OUTCOME_DOWN
    assert "does not contain 'All systems operational'" in missing.message
    assert missing.notification == wf.NOTIFICATION_KIND_DOWN  # second failure in a row

    c.site.set("/health", HEALTHY.replace("id='ok'", "id='fine'"))
    no_selector = await run(c, created.workflow_id, 9)
    assert no_selector.outcome == wf.RESULT_OUTCOME_DOWN
    assert no_selector.message == "nothing matches '#ok'"

    sent = await deliveries(c, created, settled=3)
    assert [d.kind for d in sent] == [
        wf.NOTIFICATION_KIND_DOWN,
        wf.NOTIFICATION_KIND_RECOVERED,
        wf.NOTIFICATION_KIND_DOWN,
    ]


async def test_an_expiring_certificate_is_down(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    c.site.set("/", HEALTHY)
    workflow = hourly()
    # The tenant's own service, under a private CA the executor is told to trust; its
    # self-signed certificate expires in 3 days.
    workflow.uptime.url = f"{c.tls_site}/"
    workflow.authorization_mode = js.AUTHORIZATION_MODE_INTERNAL
    created = await create(c, workflow, hooked=False)
    [result] = await results(c, created.workflow_id, 1)
    assert result.outcome == wf.RESULT_OUTCOME_DOWN
    assert result.uptime.http_status == 200
    assert result.uptime.has_certificate
    assert 2.9 < result.uptime.certificate_days < 3.0
    assert "the certificate expires in 3.0 days, fewer than 14" in result.message


async def test_an_unreachable_target_is_down(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    workflow = hourly()
    workflow.uptime.url = f"{c.site.base.rsplit(':', 1)[0]}:9/"  # discard: nothing listens
    # Internal: a public check would not get past robots.txt, which is unreachable too.
    workflow.authorization_mode = js.AUTHORIZATION_MODE_INTERNAL
    created = await create(c, workflow, hooked=False)
    [result] = await results(c, created.workflow_id, 1)
    assert result.outcome == wf.RESULT_OUTCOME_DOWN
    assert result.message.startswith("unreachable: ")


async def test_a_check_the_policy_refuses_is_check_failing(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    workflow = hourly()
    workflow.uptime.url = "http://127.0.0.2:9/"  # no policy allows 127.0.0.2
    created = await create(c, workflow)
    [result] = await results(c, created.workflow_id, 1)
    assert result.outcome == wf.RESULT_OUTCOME_CHECK_FAILING
    assert result.message.startswith("the policy refused the check")
    assert result.notification == wf.NOTIFICATION_KIND_CHECK_FAILING
    [delivery] = await deliveries(c, created, settled=1)
    assert delivery.kind == wf.NOTIFICATION_KIND_CHECK_FAILING
