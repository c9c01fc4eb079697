"""Change detection with the browser engine: real Chromium renders a local page the test
rewrites, the rendered text inside the selector is what is compared, and each stored
snapshot keeps a screenshot that ExecutorService.GetArtifact streams to its tenant only."""

from __future__ import annotations

import hashlib
import json

import grpc

from accord.common.v1 import job_result_pb2
from accord.common.v1 import job_spec_pb2 as js
from accord.executor.v1 import executor_service_pb2 as xp
from accord.executor.v1 import executor_service_pb2_grpc
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as wsp
from accord_kit.testing import as_tenant, channel, refused
from tests.workflow_fixtures import (
    MD,
    Cluster,
    browser_workflow_cluster,
    chromium_path,
    create,
    deliveries,
    hourly,
    results,
    run,
)

__all__ = ["browser_workflow_cluster", "chromium_path"]  # the fixtures the tests use
PNG = b"\x89PNG\r\n\x1a\n"


def page(news: str, footer: str = "© 2026") -> str:
    """A page whose last watched line only a browser sees: a script writes it."""
    return f"""<html><body>
      <main id="news"><h1>News</h1><p>{news}</p><p id="late"></p></main>
      <footer>{footer}</footer>
      <script>document.getElementById("late").textContent = "Written by a script";</script>
      </body></html>"""


async def artifact(c: Cluster, ref: job_result_pb2.ArtifactRef, md: object = MD) -> bytes:
    async with channel(c.executor_port) as ch:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(ch)
        replies = [
            m
            async for m in stub.GetArtifact(
                xp.GetArtifactRequest(artifact_id=ref.artifact_id),
                metadata=md,  # type: ignore[arg-type]
            )
        ]
    assert replies[0].artifact.artifact_id == ref.artifact_id
    assert replies[0].artifact.content_type == "image/png"
    return b"".join(m.chunk for m in replies)


async def test_the_rendered_page_is_compared_and_each_change_keeps_a_screenshot(
    browser_workflow_cluster: Cluster,
) -> None:
    c = browser_workflow_cluster
    c.site.set("/news", page("First story"))
    workflow = hourly()
    workflow.engine = js.ENGINE_BROWSER
    workflow.change_detection.url = f"{c.site.base}/news"
    workflow.change_detection.selector = "#news"
    workflow.change_detection.screenshot = True
    created = await create(c, workflow)

    [baseline] = await results(c, created.workflow_id, 1)
    assert baseline.outcome == wf.RESULT_OUTCOME_BASELINE, baseline.message
    assert baseline.page_change.line_count == 3  # the script's line counts: it was rendered
    assert baseline.page_change.screenshot.artifact_id

    c.site.set("/news", page("First story", footer="© 2027"))
    outside = await run(c, created.workflow_id, 2)
    assert outside.outcome == wf.RESULT_OUTCOME_UNCHANGED
    assert outside.page_change.diff == ""
    assert not outside.page_change.HasField("screenshot")  # nothing stored, nothing shown

    c.site.set("/news", page("Second story"))
    changed = await run(c, created.workflow_id, 3)
    assert changed.outcome == wf.RESULT_OUTCOME_CHANGED
    assert changed.notification == wf.NOTIFICATION_KIND_CHANGED
    assert list(changed.page_change.added_lines) == ["Second story"]
    assert list(changed.page_change.removed_lines) == ["First story"]
    assert changed.page_change.diff == "\n".join(
        [
            "--- before",
            "+++ after",
            "@@ -1,3 +1,3 @@",
            " News",
            "-First story",
            "+Second story",
            " Written by a script",
        ]
    )

    shot = changed.page_change.screenshot
    assert shot.content_type == "image/png"
    assert shot.artifact_id != baseline.page_change.screenshot.artifact_id  # another page
    data = await artifact(c, shot)
    assert data.startswith(PNG)
    assert len(data) == shot.size_bytes
    assert hashlib.sha256(data).hexdigest() == shot.sha256
    err = await refused(artifact(c, shot, as_tenant("other")))
    assert err.code() == grpc.StatusCode.NOT_FOUND  # the tenant's artifact, no one else's

    [delivery] = await deliveries(c, created, settled=1)
    assert delivery.state == wsp.DELIVERY_STATE_DELIVERED
    [(_, body)] = c.receiver.accepted
    sent = json.loads(body)["result"]["page_change"]
    assert sent["screenshot"]["artifact_id"] == shot.artifact_id
