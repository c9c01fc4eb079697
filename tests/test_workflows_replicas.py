"""Three orchestrator replicas judge the same workflow's jobs and send its deliveries: each
job is judged once and each notification delivered once."""

from __future__ import annotations

from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_orchestrator.app import App
from tests.workflow_fixtures import (
    MD,
    Cluster,
    create,
    deliveries,
    hourly,
    results,
    run,
    workflow_cluster,
)

__all__ = ["workflow_cluster"]  # the fixture the tests use


async def test_each_job_is_judged_once_across_replicas(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    replicas = [App(c.settings) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        c.site.set("/p", "<p>version 0</p>")
        workflow = hourly()
        workflow.change_detection.url = f"{c.site.base}/p"
        created = await create(c, workflow)
        await results(c, created.workflow_id, 1)
        for n in range(1, 5):
            c.site.set("/p", f"<p>version {n}</p>")
            changed = await run(c, created.workflow_id, n + 1)
            assert changed.outcome == wf.RESULT_OUTCOME_CHANGED
            assert list(changed.page_change.added_lines) == [f"version {n}"]
        found = await results(c, created.workflow_id, 5)
        assert len({r.job_id for r in found}) == 5
        paged, token = [], ""
        for _ in range(5):  # the history, two at a time, newest first
            page = await c.workflows.ListWorkflowResults(
                wsp.ListWorkflowResultsRequest(
                    workflow_id=created.workflow_id, page_size=2, page_token=token
                ),
                metadata=MD,
            )
            paged += list(page.results)
            token = page.next_page_token
            if not token:
                break
        assert [r.result_id for r in paged] == [r.result_id for r in reversed(found)]
        sent = await deliveries(c, created, settled=4)
        assert len(sent) == 4
        assert len(c.receiver.received) == 4  # none sent twice
        assert {h["Accord-Webhook-Id"] for h, _ in c.receiver.received} == {
            d.delivery_id for d in sent
        }
    finally:
        for replica in replicas:
            await replica.stop()
