"""The only way out of Chromium: a loopback proxy that asks the policy before every connect.

Chromium is launched with this proxy and no bypass (loopback included), so every request a
page makes, whatever made it (navigation, redirect, sub-resource, fetch, WebSocket, a
service worker if one slipped through), reaches the network only from here. Each job's
browser context gets a listener of its own, so a connection's port says which job and
tenant it belongs to; the browser's own listener (no job) refuses everything.

Plain HTTP is checked per request, on its full URL, and relayed with `Connection: close`, so
every request comes through here on its own connection and its permit is held until its
response ends. CONNECT (HTTPS, WSS) is checked on its host and port; the permit gates the
connect and is given back once the tunnel is up, since Chromium keeps tunnels open between
requests; each HTTPS request in it is also checked on its full URL by a route on the
job's context (`watch`), before Chromium sends it. Either way the bytes go to exactly the
address the policy checked. A refusal is answered 403 (or the request aborted) and recorded
with its reasons in the job's request log.

While tracing is on, each request, CONNECT and HTTPS request checked in a tunnel gets an
`http.request` span in the step that made it, as the HTTP engine's requests do (method, host
and port, never the URL); a refused one is failed with its code and the policy's reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

import structlog
from opentelemetry.trace import Span
from playwright.async_api import BrowserContext, Route
from playwright.async_api import Error as PlaywrightError

from accord.common.v1 import job_result_pb2
from accord_executor.domain import results as r
from accord_executor.engines.guard import Admitted, Caller, Guard
from accord_executor.engines.spans import answered, failed, request_span
from accord_kit import tracing

log = structlog.get_logger("accord.executor.proxy")

MAX_HEAD_BYTES = 64 * 1024
HTTPS = re.compile(r"^https://")  # a glob would not match a URL with a query here
CONNECT_SECONDS = 10.0
# Request headers that are about the hop to the proxy, not for the origin.
HOP_HEADERS = frozenset(
    {"proxy-connection", "proxy-authorization", "connection", "keep-alive", "te", "trailer"}
)


@dataclass
class Ticket:
    """What the proxy knows of one job: on whose behalf, which step, and its request log."""

    caller: Caller | None
    step_index: int = 0
    step_deadline: float = 0.0
    traceparent: str = ""  # the current step's span, parent of the proxy's request spans
    requests: list[job_result_pb2.RequestRecord] = field(default_factory=list)
    # URL -> why it was refused, for the engine to tell a refused navigation apart.
    refused: dict[str, r.Failure] = field(default_factory=dict)


class PolicingProxy:
    def __init__(self, guard: Guard | None) -> None:
        self._guard = guard
        self._browser_server: asyncio.Server | None = None

    async def start(self) -> int:
        """The browser-wide listener, which refuses all: Chromium's own traffic has no job."""
        self._browser_server = await asyncio.start_server(
            lambda rd, wr: self._serve(rd, wr, None), "127.0.0.1", 0
        )
        port: int = self._browser_server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._browser_server is not None:
            self._browser_server.close()

    async def watch(self, context: BrowserContext, ticket: Ticket) -> None:
        """Check each HTTPS request of the context on its full URL before it leaves.

        The proxy sees only the host and port of what travels in a CONNECT tunnel; rules
        that depend on the path (robots.txt) are decided here, per request, by the policy
        (no permit: the connection that carries the request takes that).
        """

        async def police(route: Route) -> None:
            url = route.request.url
            record = job_result_pb2.RequestRecord(step_index=ticket.step_index, url=url)
            with (
                contextlib.suppress(PlaywrightError),  # the page may close meanwhile
                request_span(route.request.method, url, ticket.traceparent) as span,
            ):
                try:
                    if ticket.caller is None or self._guard is None:
                        raise r.StepFailed(r.POLICY_DENIED, "no job owns this request")
                    await self._guard.check(ticket.caller, url, record)
                except r.StepFailed as exc:
                    ticket.requests.append(record)
                    ticket.refused[url] = exc.failure
                    failed(span, exc.failure, record)
                    await route.abort("blockedbyclient")
                    return
                await route.continue_()

        await context.route(HTTPS, police)

    @contextlib.asynccontextmanager
    async def listen(self, ticket: Ticket) -> AsyncIterator[int]:
        """A listener for one job's context, open while the block runs; yields its port."""
        tasks: set[asyncio.Task[None]] = set()

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(self._serve(reader, writer, ticket))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(accept, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        try:
            yield server.sockets[0].getsockname()[1]
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            if tasks:
                await asyncio.wait(set(tasks), timeout=1.0)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: Ticket | None
    ) -> None:
        try:
            await self._relay(reader, writer, ticket)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # the browser went away or sent garbage: nothing to relay
        finally:
            writer.close()

    async def _admit(
        self,
        writer: asyncio.StreamWriter,
        ticket: Ticket,
        url: str,
        record: job_result_pb2.RequestRecord,
        span: Span | None,
    ) -> Admitted | None:
        """The policy's yes for a request, or None once the browser has been told its no."""
        # Both checked by `_relay`, which answers 403 without them.
        assert ticket.caller is not None
        assert self._guard is not None
        try:
            deadline = max(ticket.step_deadline, time.monotonic() + 1.0)
            return await self._guard.admit(ticket.caller, url, deadline, record)
        except r.StepFailed as exc:
            ticket.refused[url] = exc.failure
            failed(span, exc.failure, record)
            await _answer(writer, 403, exc.failure.message)
            return None

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ticket: Ticket | None
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _version = line.split(" ", 2)
        tunnel = method == "CONNECT"
        url = f"https://{target}/" if tunnel else target
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            await _answer(writer, 400, "the proxy takes absolute http URLs and CONNECT only")
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if ticket is None or ticket.caller is None or self._guard is None:
            await _answer(writer, 403, "no job owns this connection")
            return
        record = job_result_pb2.RequestRecord(step_index=ticket.step_index, url=url)
        ticket.requests.append(record)
        with contextlib.ExitStack() as spanned:
            span = spanned.enter_context(request_span(method, url, ticket.traceparent))
            admitted = await self._admit(writer, ticket, url, record, span)
            if admitted is None:
                return
            permit = admitted.permit_id
            try:
                upstream = await _connect(writer, url, admitted.address, port, span)
                if upstream is None:
                    return
                up_reader, up_writer = upstream
                record.sent, record.address = True, admitted.address
                if tunnel:
                    self._guard.release(ticket.caller, permit)
                    permit = ""
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    # The tunnel is up: its span ends, and each request in it has its own.
                    spanned.close()
                else:
                    up_writer.write(_origin_request(method, parts, lines))
                await _pipe(reader, writer, up_reader, up_writer, None if tunnel else record)
                answered(span, record.http_status)
            finally:
                self._guard.release(ticket.caller, permit)


async def _connect(
    writer: asyncio.StreamWriter, url: str, address: str, port: int, span: Span | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to the checked address, or None once the browser has been told why not."""
    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            return await asyncio.open_connection(address, port)
    except (OSError, TimeoutError) as exc:
        tracing.fail(span, r.HTTP_ERROR)
        await _answer(writer, 502, f"could not connect to {url}: {exc!r}")
        return None


def _origin_request(method: str, parts: SplitResult, lines: list[str]) -> bytes:
    """The request as the origin expects it: origin-form target, no hop headers, one shot."""
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    kept = [h for h in lines if h.split(":", 1)[0].strip().lower() not in HOP_HEADERS]
    head = [f"{method} {path} HTTP/1.1", *kept, "Connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1")


def _status(line: bytes) -> int:
    try:
        return int(line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = message.encode("utf-8", "replace")
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    record: job_result_pb2.RequestRecord | None,
) -> None:
    """Copy both ways until the origin is done; the browser's side closes with it. With a
    record, the response's status line is read into it on the way."""

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await src.read(64 * 1024):
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    # The request body flows while the response is awaited: the origin may want it first.
    up = asyncio.create_task(copy(reader, up_writer))
    try:
        if record is not None:
            status_line = await up_reader.readline()
            record.http_status = _status(status_line)
            writer.write(status_line)
        await copy(up_reader, writer)
    finally:
        up.cancel()
        up_writer.close()
