"""`accord schedules ...` as a process against a real orchestrator: every command, next
fire times in the schedule's zone, --json, and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from accord_kit.testing import token


async def accord(stack, *argv: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "accord_cli", "schedules", *argv],
        env=dict(
            os.environ,
            ACCORD_TOKEN=token("acme"),
            ACCORD_ORCHESTRATOR=f"127.0.0.1:{stack.app.port}",
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_every_schedules_command(stack) -> None:  # type: ignore[no-untyped-def]
    made = await accord(
        stack,
        "create",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--tz",
        "America/New_York",
        "--url",
        "https://example.com/",
        "--label",
        "team=web",
        "--json",
    )
    assert made.returncode == 0, made.stderr
    schedule = json.loads(made.stdout)["schedule"]
    sid = schedule["scheduleId"]

    shown = await accord(stack, "get", sid)
    assert shown.returncode == 0, shown.stderr
    assert "calendar:  cron 30 2 * * * (America/New_York)" in shown.stdout
    fires = [line.strip() for line in shown.stdout.splitlines() if line.startswith("  20")]
    assert len(fires) == 10
    # In the zone: 02:30 at -05:00 or -04:00 (03:00-04:00 on the day of the spring gap).
    assert all(f[11:16] in ("02:30", "03:00") and f[-6:] in ("-05:00", "-04:00") for f in fires)

    listed = await accord(stack, "list", "--label", "team=web")
    assert listed.returncode == 0
    assert sid in listed.stdout
    assert "NEXT FIRE" in listed.stdout

    updated = await accord(stack, "update", sid, "--cron", "0 9 * * 1", "--overlap", "allow-all")
    assert updated.returncode == 0, updated.stderr
    assert "cron 0 9 * * 1" in updated.stdout
    assert "overlap:   allow-all" in updated.stdout

    paused = await accord(stack, "pause", sid, "--note", "holiday")
    assert paused.returncode == 0
    assert "paused:    yes: holiday" in paused.stdout
    assert (await accord(stack, "resume", sid)).returncode == 0

    fired = await accord(stack, "trigger", sid, "--request-id", "t1")
    assert fired.returncode == 0
    assert fired.stdout.startswith("job ")
    back = await accord(
        stack,
        "backfill",
        sid,
        "--start",
        "2026-01-05T00:00Z",
        "--end",
        "2026-01-13T00:00Z",
        "--json",
    )
    assert back.returncode == 0, back.stderr
    assert len(json.loads(back.stdout)["actions"]) == 2  # two Mondays at 09:00

    bad = await accord(stack, "create", "bad", "--cron", "61 * * * *", "--url", "https://x.com/")
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr
    assert "schedule.spec.cron" in bad.stderr
    assert (await accord(stack, "delete", sid)).returncode == 0
    missing = await accord(stack, "get", sid)
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr
    usage = await accord(stack, "backfill", sid, "--start", "yesterday", "--end", "now")
    assert usage.returncode == 2
