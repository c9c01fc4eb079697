"""`accord audit` against a real audit service, and `accord audit verify` offline: an export
verifies; a tampered export, a wrong key and a checkpoint that does not extend an earlier one
each fail with a message that says what failed. The checkpoint key is a file here, so the test
can rotate it and can sign a forged checkpoint with it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from accord_audit.app import App, migrate
from accord_audit.signer import Signer
from accord_audit.testing import Harness, settings_for
from accord_cli import audit
from accord_kit import events, tokens
from accord_kit import nats as knats
from accord_kit.testing import channel, token

SERVICE_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


@pytest.fixture
async def served(
    database_url: str, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    monkeypatch.setattr(Signer, "RELOAD_SECONDS", 0.0)  # see a rotated key file at once
    monkeypatch.setenv("ACCORD_TOKEN", token("acme", subject="test:cli"))
    producer = f"t{uuid.uuid4().hex[:12]}"
    key_file = tmp_path / "checkpoint.jwk"
    tokens.write_private_key(key_file, tokens.generate_key("first"))
    settings = settings_for(database_url, nats_url, producer, f"audit-{uuid.uuid4().hex[:12]}")
    settings.checkpoint_key_file = key_file
    nc = await nats.connect(nats_url)
    await knats.ensure_stream(nc, events.stream_name(producer), events.stream_subjects(producer))
    await asyncio.to_thread(migrate, settings)
    app = App(settings)
    await app.start()
    try:
        async with channel(app.port) as ch:
            yield Harness.over(app, ch, nc, producer, database_url)
    finally:
        await app.stop()
        await nc.jetstream().delete_stream(events.stream_name(producer))
        await nc.close()


async def accord(
    capsys: pytest.CaptureFixture[str], harness: Harness | None, *argv: str
) -> tuple[int, str, str]:
    """Run `accord audit ARGV` (in a thread: the CLI is a blocking gRPC client)."""
    parser = argparse.ArgumentParser(prog="accord")
    audit.register(parser.add_subparsers(dest="command", required=True))
    target = ["--audit", f"127.0.0.1:{harness.app.port}"] if harness else []
    args = parser.parse_args(["audit", argv[0], *target, *argv[1:]])
    code = await asyncio.to_thread(args.run, args)
    out, err = capsys.readouterr()
    # The service runs in this process and logs to the same stdout: keep the command's lines.
    out = "".join(line for line in out.splitlines(keepends=True) if not SERVICE_LOG.match(line))
    return code, out, err


async def append(harness: Harness, n: int) -> None:
    sent = [harness.event(tenant="acme") for _ in range(n)]
    await harness.publish(*sent)
    await harness.wait_for(*sent)


async def test_list_get_checkpoint_keys(
    capsys: pytest.CaptureFixture[str], served: Harness
) -> None:
    await append(served, 3)
    code, out, _ = await accord(capsys, served, "list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == ["0", "1", "2"]
    code, out, _ = await accord(capsys, served, "get", "1", "--json")
    record = json.loads(out)
    assert (code, record["index"]) == (0, "1")
    code, out, _ = await accord(capsys, served, "get", record["eventId"])
    assert "index:      1" in out
    code, out, _ = await accord(capsys, served, "checkpoint")
    assert "tree size:  3" in out
    assert "key id:     first" in out
    code, out, _ = await accord(capsys, served, "keys")
    assert out.split()[0] == "first"
    code, _, err = await accord(capsys, served, "get", "7")
    assert (code, err.startswith("accord audit: NOT_FOUND")) == (audit.MISSING, True)


async def test_an_export_verifies_offline_and_each_kind_of_damage_is_named(
    capsys: pytest.CaptureFixture[str], served: Harness, tmp_path: Path
) -> None:
    await append(served, 3)
    early = tmp_path / "early.json"
    code, out, _ = await accord(capsys, served, "checkpoint", "--json")
    early.write_text(out)
    key_file = Path(str(served.app.settings.checkpoint_key_file))
    tokens.write_private_key(key_file, tokens.generate_key("second"))  # rotate
    os.utime(key_file, (1e9, 2e9))
    await append(served, 4)
    keys, export = tmp_path / "keys.json", tmp_path / "export.jsonl"
    keys.write_text((await accord(capsys, served, "keys", "--json"))[1])
    code, _, err = await accord(capsys, served, "export", str(export), "--since", str(early))
    assert (code, err.strip()) == (0, f"exported 7 records to {export}")

    async def verify(path: Path = export, *more: str) -> tuple[int, str]:
        code, out, _ = await accord(capsys, None, "verify", str(path), "--key", str(keys), *more)
        return code, out

    code, out = await verify(export, "--since", str(early))
    assert code == 0, out
    assert "verified 7 records of accord.audit/tenant/acme against its checkpoint of size 7" in out
    assert "key second" in out
    assert "extends the checkpoint of size 3" in out

    lines = export.read_text().splitlines()
    changed = json.loads(lines[3])  # checkpoint, consistency, records 0, 1, ...
    changed["record"]["record"]["aggregateId"] = "forged"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([*lines[:3], json.dumps(changed), *lines[4:]]))
    assert await verify(bad) == (
        audit.INVALID,
        "FAILED: record 1: payload does not match payload_digest\n",
    )
    bad.write_text("\n".join([*lines[:4], *lines[5:]]))  # record 2 left out
    code, out = await verify(bad)
    assert out == "FAILED: record 3 follows record 1: records are missing or out of order\n"

    other = tmp_path / "other-key.txt"
    public = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    other.write_text(f"second:{base64.b64encode(public).decode()}")
    code, out, _ = await accord(capsys, None, "verify", str(export), "--key", str(other))
    assert (code, out) == (
        audit.INVALID,
        "FAILED: checkpoint signature does not verify with key 'second'\n",
    )
    other.write_text(f"third:{base64.b64encode(public).decode()}")
    code, out, _ = await accord(capsys, None, "verify", str(export), "--key", str(other))
    assert "signed by key 'second', which is not among the given keys" in out


async def test_a_checkpoint_that_does_not_extend_an_earlier_one_fails(
    capsys: pytest.CaptureFixture[str], served: Harness, tmp_path: Path
) -> None:
    await append(served, 5)
    early = tmp_path / "early.json"
    early.write_text((await accord(capsys, served, "checkpoint", "--size", "0", "--json"))[1])
    keys, export = tmp_path / "keys.json", tmp_path / "export.jsonl"
    keys.write_text((await accord(capsys, served, "keys", "--json"))[1])
    # A fork: a checkpoint of size 3 with another root, signed with the log's own key.
    key_file = Path(str(served.app.settings.checkpoint_key_file))
    private = OKPAlgorithm.from_jwk(json.loads(key_file.read_text()))
    assert isinstance(private, Ed25519PrivateKey)
    cp = json.loads(early.read_text())
    root = base64.b64encode(bytes(32)).decode()
    micros = 1_700_000_000_000_000
    note = f"{cp['logId']}\n3\n{root}\n{micros}\n".encode()
    forked = {
        **cp,
        "treeSize": "3",
        "rootHash": root,
        "checkpointTime": "2023-11-14T22:13:20Z",
        "note": base64.b64encode(note).decode(),
        "signature": base64.b64encode(private.sign(note)).decode(),
    }
    fork = tmp_path / "fork.json"
    fork.write_text(json.dumps(forked))
    code, _, _ = await accord(capsys, served, "export", str(export), "--since", str(fork))
    assert code == 0
    code, out, _ = await accord(
        capsys, None, "verify", str(export), "--key", str(keys), "--since", str(fork)
    )
    assert (code, out) == (
        audit.INVALID,
        "FAILED: the checkpoint of size 5 does not extend the earlier one of size 3: "
        "the consistency proof fails\n",
    )
    await served.app.logs.erase_expired({"acme": 0})
    code, _, _ = await accord(capsys, served, "export", str(export))
    code, out, _ = await accord(capsys, None, "verify", str(export), "--key", str(keys))
    assert code == 0
    assert out.strip().endswith("payload erased by retention: 0-4")
