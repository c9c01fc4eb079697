"""The local artifact store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from accord_executor.artifacts import LocalArtifactStore
from accord_kit.errors import NotFound


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
