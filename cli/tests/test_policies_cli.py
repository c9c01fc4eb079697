"""`accord policies` against a real policy service, Postgres and NATS."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from accord_cli import policies
from accord_kit.testing import token
from accord_policy.app import App, migrate
from accord_policy.config import Settings


@pytest.fixture
async def policy_target(database_url: str, nats_url: str) -> AsyncIterator[str]:
    settings = Settings(database_url=database_url, nats_url=nats_url, port=0, metrics_port=0)
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    yield f"127.0.0.1:{app.port}"
    await app.stop()


async def accord(
    capsys: pytest.CaptureFixture[str], target: str, *argv: str
) -> tuple[int, str, str]:
    """Run `accord policies ARGV` (in a thread: the CLI is a blocking gRPC client)."""
    parser = argparse.ArgumentParser(prog="accord")
    policies.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["policies", argv[0], "--policy", target, *argv[1:]])
    code = await asyncio.to_thread(args.run, args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def acme_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCORD_TOKEN", token("acme", subject="test:cli"))


async def test_create_list_get_update_delete(  # type: ignore[no-untyped-def]
    capsys, policy_target: str
) -> None:
    code, out, _ = await accord(
        capsys, policy_target, "create", "web", "--allow", "example.com", "--network", "10.0.0.0/8"
    )
    assert code == 0
    assert "name:      web" in out
    code, out, _ = await accord(capsys, policy_target, "list", "--json")
    listed = json.loads(out)["policies"]
    assert [p["displayName"] for p in listed] == ["web"]
    policy_id = listed[0]["policyId"]
    code, out, _ = await accord(capsys, policy_target, "list")
    assert out.splitlines()[0].split() == [
        "ID",
        "NAME",
        "REVISION",
        "ALLOWED",
        "DOMAINS",
        "NETWORKS",
    ]
    assert "example.com" in out
    assert "10.0.0.0/8" in out
    code, out, _ = await accord(
        capsys, policy_target, "update", policy_id, "--allow", "example.org"
    )
    assert code == 0
    assert '"example.org"' in out
    assert "10.0.0.0/8" in out
    code, out, _ = await accord(capsys, policy_target, "get", policy_id, "--json")
    assert json.loads(out)["rules"]["allowedDomains"] == ["example.org"]
    code, out, _ = await accord(capsys, policy_target, "delete", policy_id)
    assert code == 0
    code, _, err = await accord(capsys, policy_target, "get", policy_id)
    assert code == policies.MISSING
    assert "NOT_FOUND" in err


async def test_check_url_and_evaluate_exit_with_the_decision(  # type: ignore[no-untyped-def]
    capsys, policy_target: str, tmp_path: Path
) -> None:
    await accord(capsys, policy_target, "create", "web", "--allow", "example.com")
    # Denied before any lookup: nothing leaves loopback.
    code, out, _ = await accord(capsys, policy_target, "check-url", "http://other.test/")
    assert code == policies.DENIED
    assert out.startswith("DENY")
    assert "DOMAIN_NOT_ALLOWED" in out
    code, out, _ = await accord(capsys, policy_target, "check-url", "http://[::1", "--json")
    assert code == policies.DENIED
    assert json.loads(out)["decision"]["reasons"][0]["code"] == "INVALID_URL"
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {"engine": "ENGINE_HTTP", "steps": [{"request": {"url": "https://example.com/"}}]}
        )
    )
    code, out, _ = await accord(capsys, policy_target, "evaluate", str(spec))
    assert code == 0
    assert out.startswith("ALLOW")


async def test_bad_input_exits_2_with_the_servers_reason(  # type: ignore[no-untyped-def]
    capsys, policy_target: str
) -> None:
    code, _, err = await accord(capsys, policy_target, "create", "n", "--network", "10.1.2.3/8")
    assert code == policies.USAGE
    assert "INVALID_ARGUMENT" in err
    code, _, err = await accord(capsys, policy_target, "get", "not-a-uuid")
    assert code == policies.USAGE
    code, _, err = await accord(
        capsys, policy_target, "update", "00000000-0000-0000-0000-000000000000"
    )
    assert code == policies.USAGE
    assert "nothing to change" in err
