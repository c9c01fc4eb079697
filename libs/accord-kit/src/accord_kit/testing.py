"""pytest fixtures for the real things: PostgreSQL, nats-server, gRPC channels, tokens.

By default the session starts its own embedded PostgreSQL and nats-server on free ports,
so the suite depends on nothing already running; ACCORD_TEST_DATABASE_URL and
ACCORD_TEST_NATS_URL point it at existing servers instead. Each test gets a fresh database.

Auth is on in tests as in production: the session makes a signing key and points every
service it starts (in process or as a child) at its key set and at service tokens, through
the same environment variables an operator sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from accord.common.v1 import job_spec_pb2 as js
from accord_kit import tokens, tracing
from accord_kit.auth import AUTHORIZATION, TENANT_METADATA, bearer
from accord_kit.backoff import Backoff
from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port
from accord_kit.transport import MESSAGE_LIMITS, metadata_interceptors

T = TypeVar("T")


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("ACCORD_TEST_DATABASE_URL"):
        yield url
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", free_port()) as pg:
        yield pg.url


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("ACCORD_TEST_NATS_URL"):
        yield url
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats"), free_port()) as server:
        yield server.url


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of the test's own, which it may pause or restart (see `nats_outage`)."""
    server = EmbeddedNats(tmp_path / "own-nats", free_port())
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL server of the test's own, which it may stop and start again."""
    server = EmbeddedPostgres(tmp_path / "own-pg", free_port())
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


@contextlib.asynccontextmanager
async def nats_outage(
    server: EmbeddedNats, kind: Literal["pause", "restart"]
) -> AsyncIterator[None]:
    """NATS is unreachable inside the block and back after it.

    `pause` stops the process (SIGSTOP ... SIGCONT): every connection stays open and silent,
    as with a hung server or a partition, so nothing fails until a client notices. `restart`
    stops it and starts it again on the same port and store directory.
    """
    if kind == "pause":
        server.pause()
        await _until_stopped(server.pid)
        try:
            yield
        finally:
            server.resume()
    else:
        await asyncio.to_thread(server.stop)
        try:
            yield
        finally:
            await asyncio.to_thread(server.start)


async def _until_stopped(pid: int, timeout: float = 5.0) -> None:
    """Wait until every thread of `pid` has stopped: kill() returns before they all have,
    and a server thread running on another core may still answer meanwhile (Linux /proc)."""

    def stopped() -> bool | None:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that exited meanwhile
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state not in ("T", "t"):
                    return None
        return True

    async def probe() -> bool | None:
        return stopped()

    await eventually(probe, timeout, what=f"process {pid} to stop")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0, what: str = ""
) -> T:
    """Poll `probe` until it returns something other than None, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or probe}")
        await asyncio.sleep(0.05)


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every span kept in memory as it ends; off again after.
    Start what is traced (servers, channels) after this: they look at tracing as they start."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards."""
    async with fresh_database(postgres_url) as url:
        yield url


@contextlib.asynccontextmanager
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server at `postgres_url`, dropped on exit."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(_plain(postgres_url))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        admin = await asyncpg.connect(_plain(postgres_url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


AUTH_DIR = Path(tempfile.mkdtemp(prefix="accord-test-auth-"))
SIGNING_KEY = tokens.generate_key()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(tokens.provision(AUTH_DIR, SIGNING_KEY))


def token(
    tenant: str,
    scopes: Iterable[str] = tokens.ALL_SCOPES,
    *,
    subject: str | None = None,
    ttl: timedelta = timedelta(hours=2),
    key: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A token signed by the session's key (or `key`) for `tenant`, all scopes by default."""
    return tokens.issue(
        key or SIGNING_KEY,
        subject=subject or f"test:{tenant}",
        tenant=tenant,
        scopes=scopes,
        ttl=ttl,
        now=now,
    )


@functools.cache
def as_tenant(tenant: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for acting as `tenant`: a tenant-bound token with every scope."""
    return bearer(token(tenant, subject=f"test:{tenant}"))


async def refused(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call that must fail failed with."""
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


def error_info(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The ErrorInfo of a failed call as a dict: `reason` and its metadata; {} if none."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return {"reason": info.reason, **info.metadata}
    return {}


def field_violations(err: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of a failed call: field path -> description."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    found: dict[str, str] = {}
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found.update({v.field: v.description for v in bad.field_violations})
    return found


# What a client retries: the call may or may not have taken effect, and asking again with
# the same request_id returns the first result, never a second one.
RETRIED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


async def retry_unavailable(
    call: Callable[[], Awaitable[T]],
    *,
    deadline: float = 120.0,
    on_retry: Callable[[grpc.StatusCode], object] = lambda code: None,
) -> T:
    """`call()`'s reply, calling it again with backoff while it fails UNAVAILABLE (or times
    out) for up to `deadline` seconds; `call` must send the same request_id every time.

    `on_retry` hears the code of each failure that is retried.
    """
    backoff = Backoff(initial=0.1, maximum=2.0)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in RETRIED_CODES or loop.time() > give_up:
                raise
            on_retry(exc.code())
        await asyncio.sleep(backoff.next())


def stamp(when: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp for an aware datetime."""
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(when)
    return result


def channel(port: int) -> grpc.aio.Channel:
    """A channel whose calls without a token act as an all-scopes service for `default`."""
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=MESSAGE_LIMITS,
        interceptors=metadata_interceptors(_act_as_default),
    )


@functools.cache
def _service_token() -> str:
    return token(tokens.SERVICE_TENANT, subject="test:service")


def _act_as_default(metadata: grpc.aio.Metadata) -> None:
    if AUTHORIZATION not in metadata:
        for key, value in bearer(_service_token()):
            metadata[key] = value
        if TENANT_METADATA not in metadata:
            metadata[TENANT_METADATA] = "default"


REPO_ROOT = Path(__file__).resolve().parents[4]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample a service's metrics endpoint serves, keyed by (name, labels)."""

    def fetch() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(fetch)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def unrunnable_specs(url: str) -> list[Any]:
    """One spec of each kind a submission refuses because it could never run, each as
    `pytest.param(spec, field)`: `field` is the path, within the spec, the refusal names.
    `url` is the one page they would fetch; nothing ever fetches it."""

    def spec(*steps: js.Step) -> js.JobSpec:
        return js.JobSpec(engine=js.ENGINE_HTTP, steps=steps)

    page = js.Step(name="page", request=js.RequestStep(url=url))
    title = js.ExtractStep(selector="title")
    cases = {
        "unknown-reference": (
            spec(page, js.Step(assertion=js.AssertStep(text_contains="{{ ghost }}"))),
            "steps[1].assertion.text_contains",
        ),
        "duplicate-name": (spec(page, js.Step(name="page", extract=title)), "steps[1].name"),
        "browser-step-on-http": (
            spec(page, js.Step(click=js.ClickStep(selector="a"))),
            "steps[1].click",
        ),
        "invalid-selector": (
            spec(page, js.Step(extract=js.ExtractStep(selector="a["))),
            "steps[1].extract.selector",
        ),
        "extract-before-request": (spec(js.Step(extract=title), page), "steps[0].extract"),
    }
    return [pytest.param(s, field, id=name) for name, (s, field) in cases.items()]
