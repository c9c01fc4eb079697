"""The job-posting monitor end to end: a listing over two pages, then one posting added and
one removed: exactly those are reported."""

from __future__ import annotations

import json

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


def listing(jobs: list[tuple[str, str, str]], next_page: str = "") -> str:
    items = "".join(
        f'<li class="job"><a class="title" href="{link}">{title}</a>'
        f'<span class="where">{where}</span></li>'
        for title, link, where in jobs
    )
    more = f'<a class="next" href="{next_page}">Next</a>' if next_page else ""
    return f"<html><body><ul>{items}</ul>{more}<p>Rendered at 10:00</p></body></html>"


async def test_new_and_removed_postings_across_two_pages(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    page_one = [("Engineer", "/jobs/1", "Berlin"), ("Designer", "/jobs/2", "Paris")]
    page_two = [("Writer", "/jobs/3", "Remote")]
    c.site.set("/careers", listing(page_one, next_page="/careers/2"))
    c.site.set("/careers/2", listing(page_two))
    workflow = hourly()
    p = workflow.job_postings
    p.url = f"{c.site.base}/careers"
    p.item_selector = "li.job"
    p.fields.update({"title": ".title", "link": "a.title@href", "location": ".where"})
    p.next_page_selector = "a.next"
    p.max_pages = 3
    created = await create(c, workflow)

    [baseline] = await results(c, created.workflow_id, 1)
    assert baseline.outcome == wf.RESULT_OUTCOME_BASELINE
    assert baseline.postings.total == 3
    assert baseline.postings.pages == 2

    same = await run(c, created.workflow_id, 2)
    assert same.outcome == wf.RESULT_OUTCOME_UNCHANGED

    page_two = [("Writer", "/jobs/3", "Remote"), ("Analyst", "/jobs/4", "Lisbon")]
    page_one = [("Engineer", "/jobs/1", "Berlin")]  # the designer is gone
    c.site.set("/careers", listing(page_one, next_page="/careers/2"))
    c.site.set("/careers/2", listing(page_two))
    changed = await run(c, created.workflow_id, 3)
    assert changed.outcome == wf.RESULT_OUTCOME_CHANGED
    assert changed.notification == wf.NOTIFICATION_KIND_NEW_ITEMS
    [added] = changed.postings.added
    assert added.key == f"{c.site.base}/jobs/4"
    assert dict(added.fields) == {
        "title": "Analyst",
        "link": f"{c.site.base}/jobs/4",
        "location": "Lisbon",
    }
    [removed] = changed.postings.removed
    assert removed.key == f"{c.site.base}/jobs/2"
    assert removed.fields["title"] == "Designer"

    [delivery] = await deliveries(c, created, settled=1)
    assert delivery.kind == wf.NOTIFICATION_KIND_NEW_ITEMS
    [(_, body)] = c.receiver.accepted
    sent = json.loads(body)["result"]["postings"]
    assert [x["fields"]["title"] for x in sent["added"]] == ["Analyst"]
    assert [x["fields"]["title"] for x in sent["removed"]] == ["Designer"]


async def test_the_page_limit_bounds_a_run(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    # Every page links to the next one, without end.
    for n in range(1, 6):
        c.site.set(f"/endless/{n}", listing([(f"Job {n}", f"/e/{n}", "")], f"/endless/{n + 1}"))
    workflow = hourly()
    p = workflow.job_postings
    p.url = f"{c.site.base}/endless/1"
    p.item_selector = "li.job"
    p.fields.update({"title": ".title", "link": "a.title@href"})
    p.next_page_selector = "a.next"
    p.max_pages = 2
    created = await create(c, workflow, hooked=False)
    [baseline] = await results(c, created.workflow_id, 1)
    assert baseline.postings.pages == 2
    assert baseline.postings.total == 2
