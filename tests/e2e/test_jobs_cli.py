"""`accord jobs ...` as a process against the four services: every command, `--json` read
back, `--output-file`, a profile from a config file, and the exit codes of success, a job
that fails, a job policy rejects, usage errors and refusals."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from accord_kit.testing import token
from tests.e2e.suite import Suite
from tests.e2e.test_one_job import TENANT, allow_local_site

pytestmark = pytest.mark.e2e
OK, FAILED, USAGE, MISSING = 0, 1, 2, 3


class Accord:
    """Runs `python -m accord_cli ARGV` with the suite's address and a tenant token."""

    def __init__(self, suite: Suite, **env: str) -> None:
        self.env = dict(
            os.environ,
            ACCORD_ORCHESTRATOR=suite.target("orchestrator"),
            ACCORD_TOKEN=token(TENANT, subject="test:cli"),
            **env,
        )

    async def __call__(
        self, *argv: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "accord_cli", *argv],
            env={**self.env, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


async def test_create_watch_get_list_batch(suite: Suite, site: str, tmp_path: Path) -> None:
    await allow_local_site(suite.target("policy"))
    accord = Accord(suite)

    made = await accord("jobs", "create", "--url", site, "--extract", "title=title", "--json")
    assert made.returncode == OK, made.stderr
    job = json.loads(made.stdout)["job"]
    job_id = job["jobId"]
    assert job["state"] == "JOB_STATE_QUEUED"

    watched = await accord("jobs", "watch", job_id)
    assert watched.returncode == OK, watched.stdout + watched.stderr
    assert "-> SUCCEEDED" in watched.stdout
    assert f"job {job_id} ended SUCCEEDED" in watched.stdout
    steps = [line.split() for line in watched.stdout.splitlines() if line.startswith("  step ")]
    assert [s[1:4] for s in steps] == [["0", "page", "SUCCEEDED"], ["1", "title", "SUCCEEDED"]]
    assert 'output title: "Accord test site"' in watched.stdout
    page_line = next(x for x in watched.stdout.splitlines() if x.startswith("  output page: "))
    status = json.loads(page_line.removeprefix("  output page: "))["status"]
    assert (status, type(status)) == (200, int)  # a Struct's double, printed as the integer

    streamed = await accord("jobs", "watch", job_id, "--json")
    changes = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert [c["change"]["state"] for c in changes][-1] == "JOB_STATE_SUCCEEDED"
    assert [c["change"]["version"] for c in changes] == sorted(
        c["change"]["version"] for c in changes
    )

    got = await accord("jobs", "get", job_id, "--json")
    assert got.returncode == OK
    shown = json.loads(got.stdout)
    assert shown["state"] == "JOB_STATE_SUCCEEDED"
    assert shown["result"]["outputs"]["title"] == "Accord test site"
    text = await accord("jobs", "get", job_id)
    assert "state:     SUCCEEDED" in text.stdout
    assert "decision:  ALLOW" in text.stdout

    specs = tmp_path / "batch.yaml"
    one = {"engine": "ENGINE_HTTP", "steps": [{"request": {"url": site}}]}
    specs.write_text(yaml.safe_dump([one, one]))
    out = tmp_path / "batch.json"
    batch = await accord("jobs", "batch", str(specs), "--json", "--output-file", str(out))
    assert batch.returncode == OK, batch.stderr
    assert batch.stdout == ""
    batch_ids = [j["jobId"] for j in json.loads(out.read_text())["jobs"]]
    assert len(batch_ids) == 2

    listed = await accord("jobs", "list")
    assert listed.returncode == OK
    assert listed.stdout.splitlines()[0].split() == [
        "JOB", "ID", "STATE", "ENGINE", "CREATED", "ATTEMPTS", "MESSAGE"
    ]  # fmt: skip
    assert any(
        line.startswith(job_id) and " SUCCEEDED " in line for line in listed.stdout.splitlines()
    )
    only = await accord("jobs", "list", "--state", "succeeded", "--json")
    assert job_id in {j["jobId"] for j in json.loads(only.stdout)["jobs"]}
    assert {j["state"] for j in json.loads(only.stdout)["jobs"]} == {"JOB_STATE_SUCCEEDED"}

    # The same, through a profile of a config file instead of the environment.
    token_file = tmp_path / "cli.token"
    token_file.write_text(token(TENANT, ["jobs:read"], subject="test:profile"))
    config = tmp_path / "config.yaml"
    profile = {"orchestrator": suite.target("orchestrator"), "token_file": str(token_file)}
    config.write_text(yaml.safe_dump({"profiles": {"e2e": profile}}))
    bare = {"ACCORD_ORCHESTRATOR": "", "ACCORD_TOKEN": ""}
    by_profile = await accord(
        "--config", str(config), "--profile", "e2e", "jobs", "get", job_id, "--json", env=bare
    )
    assert by_profile.returncode == OK, by_profile.stderr
    assert json.loads(by_profile.stdout)["jobId"] == job_id
    # That profile's token may read, not write: the service refuses and says why.
    refused = await accord(
        "--config", str(config), "--profile", "e2e", "jobs", "create", "--url", site, env=bare
    )
    assert refused.returncode == 4
    assert "PERMISSION_DENIED" in refused.stderr
    unknown = await accord("--config", str(config), "--profile", "nope", "jobs", "list")
    assert unknown.returncode == USAGE
    assert "no profile 'nope'" in unknown.stderr


async def test_failures_exit_codes_cancel_and_retry(
    suite: Suite, site: str, tmp_path: Path
) -> None:
    await allow_local_site(suite.target("policy"))
    accord = Accord(suite)

    failing = tmp_path / "failing.yaml"
    failing.write_text(
        yaml.safe_dump(
            {
                "engine": "ENGINE_HTTP",
                "retry_policy": {"max_attempts": 1},
                "steps": [
                    {"request": {"url": site}},
                    {"assertion": {"text_contains": "no such text on the page"}},
                ],
            }
        )
    )
    ran = await accord("jobs", "create", "--spec", str(failing), "--wait")
    assert ran.returncode == FAILED, ran.stdout + ran.stderr
    assert "ended DEAD_LETTER" in ran.stdout
    failed_id = ran.stdout.split()[1]
    # The same with --json: the created job, then each change, one JSON object a line.
    lines = await accord("jobs", "create", "--spec", str(failing), "--wait", "--json")
    assert lines.returncode == FAILED, lines.stderr
    created, *changes = [json.loads(line) for line in lines.stdout.splitlines()]
    assert created["job"]["state"] == "JOB_STATE_QUEUED"
    assert changes[-1]["change"]["state"] == "JOB_STATE_DEAD_LETTER"
    assert changes[-1]["job"]["attempts"][0]["errorMessage"]
    retried = await accord("jobs", "retry", failed_id, "--json")
    assert retried.returncode == OK, retried.stderr
    assert json.loads(retried.stdout)["state"] == "JOB_STATE_QUEUED"

    # Policy allows 127.0.0.1 only: 127.0.0.2 is rejected at admission, nothing is sent.
    rejected = await accord("jobs", "create", "--url", "http://127.0.0.2:9/", "--wait")
    assert rejected.returncode == FAILED
    assert "state:     REJECTED" in rejected.stdout
    assert "DOMAIN_NOT_ALLOWED" in rejected.stdout

    later = tmp_path / "later.json"
    later.write_text(
        json.dumps(
            {
                "engine": "ENGINE_HTTP",
                "notBeforeTime": "2099-01-01T00:00:00Z",
                "steps": [{"request": {"url": site}}],
            }
        )
    )
    queued = await accord("jobs", "create", "--spec", str(later), "--json")
    queued_id = json.loads(queued.stdout)["job"]["jobId"]
    cancelled = await accord("jobs", "cancel", queued_id, "--reason", "not needed")
    assert cancelled.returncode == OK, cancelled.stderr
    assert "state:     CANCELLED" in cancelled.stdout
    assert (await accord("jobs", "watch", queued_id)).returncode == FAILED
    again = await accord("jobs", "cancel", queued_id)
    assert again.returncode == MISSING
    assert "FAILED_PRECONDITION" in again.stderr

    bad = await accord("jobs", "get", "not-a-uuid")
    assert bad.returncode == USAGE
    assert "INVALID_ARGUMENT" in bad.stderr
    assert "job_id" in bad.stderr
    missing = await accord("jobs", "get", str(uuid.uuid4()))
    assert missing.returncode == MISSING
    assert "NOT_FOUND" in missing.stderr
    assert (await accord("jobs", "create")).returncode == USAGE
    unreadable = await accord("jobs", "create", "--spec", str(tmp_path / "absent.yaml"))
    assert unreadable.returncode == USAGE
    not_a_spec = tmp_path / "list.yaml"
    not_a_spec.write_text("- 1\n- 2\n")
    assert (await accord("jobs", "create", "--spec", str(not_a_spec))).returncode == USAGE


async def test_watch_resumes_across_an_orchestrator_restart(suite: Suite, site: str) -> None:
    await allow_local_site(suite.target("policy"))
    accord = Accord(suite)
    spec = {"engine": "ENGINE_HTTP", "steps": [{"request": {"url": site}}]}
    later = {**spec, "notBeforeTime": "2099-01-01T00:00:00Z"}
    made = await accord("jobs", "create", "--spec", "-", "--json", stdin=json.dumps(later))
    assert made.returncode == OK, made.stderr
    job_id = json.loads(made.stdout)["job"]["jobId"]

    watch = subprocess.Popen(
        [sys.executable, "-m", "accord_cli", "jobs", "watch", job_id],
        env=accord.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watch.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(watch.stdout.readline), timeout=60)
        assert "QUEUED" in first, first
        # The orchestrator goes away under the open stream and comes back on its port.
        await asyncio.to_thread(suite.stop_service, "orchestrator")
        await asyncio.to_thread(suite.start_service, "orchestrator")
        cancelled = await accord("jobs", "cancel", job_id, "--reason", "after the restart")
        assert cancelled.returncode == OK, cancelled.stderr
        out, err = await asyncio.wait_for(asyncio.to_thread(watch.communicate), timeout=120)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    assert watch.returncode == FAILED, out + err
    assert "resuming after version" in err
    assert f"job {job_id} ended CANCELLED: after the restart" in out
    assert "-> CANCELLED" in out
