"""The step/engine table read over whole specs, and the local artifact store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from accord.common.v1 import job_spec_pb2 as js
from accord_executor.artifacts import LocalArtifactStore
from accord_executor.domain.steps import ENGINES_BY_ACTION, engine_problems
from accord_kit.errors import NotFound


def test_the_table_covers_every_step_action() -> None:
    actions = {f.name for f in js.Step.DESCRIPTOR.oneofs_by_name["action"].fields}
    assert set(ENGINES_BY_ACTION) == actions


def test_engine_problems_name_each_step_its_engine_cannot_run() -> None:
    steps = [
        js.Step(request=js.RequestStep(url="http://127.0.0.1/")),
        js.Step(wait_for=js.WaitForStep(delay=duration_pb2.Duration(seconds=1))),
        js.Step(wait_for=js.WaitForStep(text="x")),
        js.Step(extract=js.ExtractStep(selector="p")),
        js.Step(extract=js.ExtractStep(selector="p", html=True)),
        js.Step(scroll=js.ScrollStep()),
        js.Step(assertion=js.AssertStep(selector_absent="p")),
        js.Step(request=js.RequestStep(url="http://127.0.0.1/", save_body=True)),
        js.Step(snapshot=js.SnapshotStep()),
    ]
    http = dict(engine_problems(js.JobSpec(engine=js.ENGINE_HTTP, steps=steps)))
    assert set(http) == {
        "steps[2].wait_for",
        "steps[4].extract",
        "steps[5].scroll",
        "steps[7].request",
        "steps[8].snapshot",
    }
    assert http["steps[4].extract"] == "extract html steps need the browser engine, not http"
    assert engine_problems(js.JobSpec(engine=js.ENGINE_BROWSER, steps=steps)) == []
    both = js.Step(extract=js.ExtractStep(selector="p", html=True, attribute="href"))
    assert dict(engine_problems(js.JobSpec(engine=js.ENGINE_BROWSER, steps=[both]))) == {
        "steps[0].extract": "html and attribute exclude each other"
    }


async def read(store: LocalArtifactStore, tenant: str, artifact_id: str) -> bytes:
    return b"".join([c async for c in store.read(tenant, artifact_id)])


async def test_artifacts_are_content_addressed_per_tenant(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    data = os.urandom(200_000)  # several chunks
    ref = await store.put("acme", data, name="a.png", content_type="image/png")
    assert ref.artifact_id == ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.size_bytes == len(data)
    assert await read(store, "acme", ref.artifact_id) == data
    assert await store.get("acme", ref.artifact_id) == ref
    again = await store.put("acme", data, name="a.png", content_type="image/png")
    assert again == ref
    assert len(list(tmp_path.rglob("[0-9a-f]" * 64))) == 1  # stored once
    with pytest.raises(NotFound):
        await store.get("globex", ref.artifact_id)
    with pytest.raises(NotFound):
        await store.get("acme", "../" + ref.artifact_id[3:])


async def test_prune_deletes_only_what_outlived_the_retention(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    old = await store.put("acme", b"old", name="o", content_type="text/plain")
    new = await store.put("acme", b"new", name="n", content_type="text/plain")
    body = next(tmp_path.rglob(old.artifact_id))
    a_day_ago = time.time() - 86400
    os.utime(body, (a_day_ago, a_day_ago))
    assert await store.prune(3600) == 1
    with pytest.raises(NotFound):
        await store.get("acme", old.artifact_id)
    assert await read(store, "acme", new.artifact_id) == b"new"
