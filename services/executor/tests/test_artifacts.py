"""The local artifact store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest
from google.protobuf import duration_pb2

from accord.policy.v1 import policy_pb2, policy_service_pb2, policy_service_pb2_grpc
from accord_executor.app import App
from accord_executor.artifacts import LocalArtifactStore
from accord_kit.errors import NotFound
from accord_kit.testing import as_tenant, channel
from accord_policy.app import App as PolicyApp


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


def age(store: LocalArtifactStore, tenant: str, artifact_id: str, days: float) -> None:
    [body] = store.root.rglob(artifact_id)
    then = time.time() - days * 86400
    os.utime(body, (then, then))


async def test_each_tenant_is_pruned_after_the_retention_its_policies_set(
    executor_app: App, policy_app: PolicyApp
) -> None:
    """Default 30 days here; one tenant keeps 1 hour, another 90 days, one sets none."""
    run = uuid.uuid4().hex[:8]
    brief, long, plain = f"brief-{run}", f"long-{run}", f"plain-{run}"
    async with channel(policy_app.port) as ch:
        stub = policy_service_pb2_grpc.PolicyServiceStub(ch)
        for tenant, days in ((brief, 1 / 24), (long, 90)):
            rules = policy_pb2.PolicyRules(
                retention=duration_pb2.Duration(seconds=int(days * 86400))
            )
            await stub.CreatePolicy(
                policy_service_pb2.CreatePolicyRequest(
                    request_id="keep", policy=policy_pb2.Policy(display_name="keep", rules=rules)
                ),
                metadata=as_tenant(tenant),
            )
    store = executor_app.artifacts
    made = {}
    for tenant in (brief, long, plain):
        for days in (0.1, 40):  # 2.4 hours and 40 days old
            ref = await store.put(tenant, os.urandom(16), name="a", content_type="text/plain")
            age(store, tenant, ref.artifact_id, days)
            made[tenant, days] = ref.artifact_id

    assert await executor_app.prune_artifacts() == 3
    kept = set()
    for (tenant, days), artifact_id in made.items():
        with contextlib.suppress(NotFound):
            await store.get(tenant, artifact_id)
            kept.add((tenant, days))
    assert kept == {(long, 0.1), (long, 40), (plain, 0.1)}

    # Without the policy service's answer nothing is pruned: a tenant may keep longer.
    await policy_app.stop()
    age(store, long, made[long, 40], 400)
    assert await executor_app.prune_artifacts() is None
    assert await store.get(long, made[long, 40])
