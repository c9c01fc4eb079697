"""A public check whose robots.txt cannot be fetched: RFC 9309 makes that disallow-all, so
the check is not made, and its result says that, not that the target failed."""

from __future__ import annotations

from accord.orchestrator.v1 import workflow_pb2 as wf
from accord_kit.testing import eventually
from tests.workflow_fixtures import Cluster, create, hourly, results, run, workflow_cluster

__all__ = ["workflow_cluster"]  # the fixture the tests use


async def test_a_failing_robots_txt_is_told_as_that_and_the_target_is_not_blamed(
    workflow_cluster: Cluster,
) -> None:
    c = workflow_cluster
    c.site.set("/health", "<html><body><p id='ok'>All systems operational</p></body></html>")
    c.site.set("/robots.txt", "temporarily broken", status=503)
    uptime = hourly()
    uptime.uptime.url = f"{c.site.base}/health"
    uptime.uptime.expected_text = "All systems operational"
    made = await create(c, uptime)
    change = hourly()
    change.change_detection.url = f"{c.site.base}/health"
    watched = await create(c, change)

    for created in (made, watched):
        [first] = await results(c, created.workflow_id, 1)
        assert first.outcome == wf.RESULT_OUTCOME_CHECK_FAILING  # not DOWN, not a change
        assert first.message.startswith(
            f"not checked: robots.txt of {c.site.base} could not be fetched "
            "(it answered HTTP 503), which RFC 9309 reads as disallowing the whole site"
        ), first.message
        assert first.message.endswith("the URL itself was not requested"), first.message
        assert "DISALLOWED" not in first.message
        assert first.WhichOneof("detail") is None  # no measurements of a target not asked
    assert "/robots.txt" in c.site.asked
    assert "/health" not in c.site.asked  # the target itself was never requested

    # Once robots.txt answers again (a 404: no rules), the same target is up.
    c.site.set("/robots.txt", "", status=404)
    count = 1

    async def up() -> wf.WorkflowResult | None:
        nonlocal count
        count += 1
        found = await run(c, made.workflow_id, count)
        return found if found.outcome == wf.RESULT_OUTCOME_UP else None

    back = await eventually(up, 30, what="the check to run again")
    assert back.uptime.up
    assert "/health" in c.site.asked
