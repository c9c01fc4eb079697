"""`accord workflows ...` and `accord webhooks ...` as processes against a real stack."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from accord_cli.up import webhook_key
from accord_kit.testing import token
from tests.workflow_fixtures import SECRET, Cluster, results, workflow_cluster

__all__ = ["workflow_cluster"]  # the fixture the tests use


async def accord(c: Cluster, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "accord_cli", *argv],
        env=dict(
            os.environ,
            ACCORD_TOKEN=token("acme"),
            ACCORD_ORCHESTRATOR=f"127.0.0.1:{c.port}",
            **env,
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_every_workflows_and_webhooks_command(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    c.site.set("/news", "<main><p>One</p></main>")
    made = await accord(
        c,
        "workflows",
        "create",
        "news",
        "--change",
        f"{c.site.base}/news",
        "--selector",
        "main",
        "--ignore",
        "^Updated",
        "--every",
        "1h",
        "--webhook",
        c.receiver.url,
        "--json",
        ACCORD_WEBHOOK_SECRET=SECRET,
    )
    assert made.returncode == 0, made.stderr
    assert SECRET not in made.stdout
    workflow = json.loads(made.stdout)["workflow"]
    wid, hid = workflow["workflowId"], workflow["webhooks"][0]["webhookId"]

    listed = await accord(c, "workflows", "list")
    assert listed.returncode == 0, listed.stderr
    assert wid in listed.stdout
    assert "change_detection" in listed.stdout

    await results(c, wid, 1)
    c.site.set("/news", "<main><p>Two</p></main>")
    ran = await accord(c, "workflows", "run", wid)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("job ")
    await results(c, wid, 2)
    history = await accord(c, "workflows", "results", wid)
    assert history.returncode == 0, history.stderr
    first, *diff = history.stdout.splitlines()
    assert "changed" in first
    assert "[notified: changed]" in first
    assert "    -One" in diff
    assert "    +Two" in diff

    shown = await accord(c, "workflows", "get", wid)
    assert "kind:      change_detection" in shown.stdout
    assert "checks:    2" in shown.stdout
    paused = await accord(c, "workflows", "pause", wid, "--note", "holiday")
    assert "paused:    yes" in paused.stdout

    tested = await accord(c, "webhooks", "test", wid, hid)
    assert tested.returncode == 0, tested.stderr
    assert tested.stdout.startswith("delivery ")
    assert "delivered HTTP 204" in tested.stdout
    log = await accord(c, "webhooks", "deliveries", wid, hid)
    assert log.returncode == 0, log.stderr
    assert "test" in log.stdout

    bad = await accord(c, "workflows", "create", "x", "--uptime", "ftp://nowhere/")
    assert bad.returncode == 2
    assert "workflow.uptime.url" in bad.stderr
    no_secret = await accord(
        c, "workflows", "create", "y", "--uptime", c.site.base, "--webhook", c.receiver.url
    )
    assert no_secret.returncode == 2
    gone = await accord(c, "workflows", "delete", wid)
    assert gone.returncode == 0
    missing = await accord(c, "workflows", "get", wid)
    assert missing.returncode == 3
    assert "NOT_FOUND" in missing.stderr


async def test_workflows_update_changes_only_what_is_given(workflow_cluster: Cluster) -> None:
    c = workflow_cluster
    c.site.set("/news", "<main><p>One</p></main><aside>Aside</aside>")
    made = await accord(
        c,
        "workflows",
        "create",
        "news",
        "--change",
        f"{c.site.base}/news",
        "--selector",
        "main",
        "--webhook",
        c.receiver.url,
        "--json",
        ACCORD_WEBHOOK_SECRET=SECRET,
    )
    assert made.returncode == 0, made.stderr
    workflow = json.loads(made.stdout)["workflow"]
    wid, hid = workflow["workflowId"], workflow["webhooks"][0]["webhookId"]

    rotated = "a-rotated-secret-from-the-cli"
    changed = await accord(
        c,
        "workflows",
        "update",
        wid,
        "--selector",
        "aside",
        "--every",
        "30m",
        "--rotate-secret",
        hid,
        "--json",
        ACCORD_WEBHOOK_SECRET=rotated,
    )
    assert changed.returncode == 0, changed.stderr
    assert rotated not in changed.stdout
    after = json.loads(changed.stdout)["workflow"]
    assert after["changeDetection"]["selector"] == "aside"
    assert after["changeDetection"]["url"] == f"{c.site.base}/news"  # not given: kept
    assert after["calendar"]["interval"] == "1800s"
    assert [h["webhookId"] for h in after["webhooks"]] == [hid]
    assert after["etag"] != workflow["etag"]
    tested = await accord(c, "webhooks", "test", wid, hid)
    assert "HTTP 401" in tested.stdout  # the receiver knows only the old secret

    wrong = await accord(c, "workflows", "update", wid, "--expect-text", "x")
    assert wrong.returncode == 2
    assert "--expect-text is for uptime workflows" in wrong.stderr
    stale = await accord(c, "workflows", "update", wid, "--name", "n", "--etag", "old")
    assert stale.returncode != 0
    assert "ABORTED" in stale.stderr
    shown = await accord(c, "workflows", "get", wid)
    assert f"etag:      {after['etag']}" in shown.stdout


def test_accord_up_makes_the_webhook_key_once(tmp_path: Path) -> None:
    first = webhook_key(tmp_path)
    assert len(base64.b64decode(first)) == 32
    assert (tmp_path / "auth" / "webhook.key").stat().st_mode & 0o777 == 0o600
    assert webhook_key(tmp_path) == first  # kept: secrets sealed before still open
