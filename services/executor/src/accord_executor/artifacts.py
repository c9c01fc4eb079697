"""Artifacts (screenshots, page HTML) stored by the SHA-256 of their content, per tenant.

`ArtifactStore` is what the engines and GetArtifact need; `LocalArtifactStore` keeps them in
a directory. An S3-compatible store implements the same three calls (keys
`<tenant>/<sha256>`, metadata in object headers, pruning by a lifecycle rule or `prune`).
The same content stored twice by one tenant is one file, its age renewed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Protocol

from accord.common.v1 import job_result_pb2
from accord_kit.errors import NotFound

CHUNK_BYTES = 64 * 1024


class ArtifactStore(Protocol):
    async def put(
        self, tenant: str, data: bytes, *, name: str, content_type: str
    ) -> job_result_pb2.ArtifactRef:
        """Store the bytes for the tenant; the reference to fetch them with."""
        ...

    async def get(self, tenant: str, artifact_id: str) -> job_result_pb2.ArtifactRef:
        """The tenant's artifact's reference; NotFound when the tenant has no such one."""
        ...

    def read(self, tenant: str, artifact_id: str) -> AsyncIterator[bytes]:
        """The artifact's content in chunks of up to CHUNK_BYTES."""
        ...

    async def prune(
        self, older_than_seconds: float, tenants: Mapping[str, float] | None = None
    ) -> int:
        """Delete artifacts stored longer ago than their tenant's retention in `tenants`
        (seconds) or, for a tenant not listed, `older_than_seconds`; how many were deleted."""
        ...


class LocalArtifactStore:
    """`<root>/<tenant key>/<sha256>` holds the bytes, `<sha256>.json` name and type."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _dir(self, tenant: str) -> Path:
        # Tenant ids are not path-safe by contract; their digest is.
        return self.root / hashlib.sha256(tenant.encode()).hexdigest()[:32]

    async def put(
        self, tenant: str, data: bytes, *, name: str, content_type: str
    ) -> job_result_pb2.ArtifactRef:
        digest = hashlib.sha256(data).hexdigest()
        ref = job_result_pb2.ArtifactRef(
            artifact_id=digest,
            name=name,
            content_type=content_type,
            size_bytes=len(data),
            sha256=digest,
        )
        meta = json.dumps({"name": name, "content_type": content_type}).encode()
        await asyncio.to_thread(self._write, self._dir(tenant), digest, data, meta)
        return ref

    def _write(self, folder: Path, digest: str, data: bytes, meta: bytes) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        body = folder / digest
        if body.exists():
            os.utime(body)  # stored again: its retention starts again
        else:
            _atomic(body, data)
        _atomic(folder / f"{digest}.json", meta)

    async def get(self, tenant: str, artifact_id: str) -> job_result_pb2.ArtifactRef:
        body = self._body(tenant, artifact_id)
        try:
            raw, size = await asyncio.to_thread(_meta, body)
        except FileNotFoundError:
            raise NotFound(f"artifact {artifact_id} not found") from None
        return job_result_pb2.ArtifactRef(
            artifact_id=artifact_id,
            name=str(raw.get("name", "")),
            content_type=str(raw.get("content_type", "application/octet-stream")),
            size_bytes=size,
            sha256=artifact_id,
        )

    async def read(self, tenant: str, artifact_id: str) -> AsyncIterator[bytes]:
        with open(self._body(tenant, artifact_id), "rb") as f:  # noqa: ASYNC230 - chunks are small reads
            while chunk := await asyncio.to_thread(f.read, CHUNK_BYTES):
                yield chunk

    def _body(self, tenant: str, artifact_id: str) -> Path:
        if len(artifact_id) != 64 or any(c not in "0123456789abcdef" for c in artifact_id):
            raise NotFound(f"artifact {artifact_id!r} not found")
        return self._dir(tenant) / artifact_id

    async def prune(
        self, older_than_seconds: float, tenants: Mapping[str, float] | None = None
    ) -> int:
        now = time.time()
        cutoffs = {self._dir(t).name: now - kept for t, kept in (tenants or {}).items()}
        return await asyncio.to_thread(self._prune, now - older_than_seconds, cutoffs)

    def _prune(self, default: float, cutoffs: dict[str, float]) -> int:
        deleted = 0
        if not self.root.is_dir():
            return 0
        for folder in self.root.iterdir():
            cutoff = cutoffs.get(folder.name, default)
            for body in folder.glob("[0-9a-f]" * 64):
                if body.stat().st_mtime < cutoff:
                    body.unlink(missing_ok=True)
                    (folder / f"{body.name}.json").unlink(missing_ok=True)
                    deleted += 1
        return deleted


def _meta(body: Path) -> tuple[dict[str, object], int]:
    size = body.stat().st_size
    raw = json.loads((body.parent / f"{body.name}.json").read_bytes())
    return (raw if isinstance(raw, dict) else {}), size


def _atomic(path: Path, data: bytes) -> None:
    """Readers see the whole file or none of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
