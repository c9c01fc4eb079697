"""The HTTP engine: runs a job's steps in order over one connection pool per tenant.

Every request is decided by the policy service where it is made (see `guard`): the first
of each request step, every redirect hop (followed here, one at a time, never by aiohttp)
and every URL rendered at run time. It is then sent to exactly the address the policy
checked, so pooled connections are keyed by checked address, never by a name.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from google.protobuf import struct_pb2, timestamp_pb2
from prometheus_client import Counter
from yarl import URL

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord_executor.domain import results as r
from accord_executor.domain.page import Page
from accord_executor.domain.templates import render_text
from accord_executor.engines.guard import Caller, Guard
from accord_executor.engines.pools import TenantPools
from accord_executor.engines.spans import answered, failed, request_span
from accord_kit import jobspec as kinds
from accord_kit import tracing
from accord_kit.jobspec import TemplateError, template_problems
from accord_kit.pinning import pin

OnStep = Callable[[job_result_pb2.StepResult], None]
"""Told about each step as soon as it is decided (ran, failed or skipped)."""


class Runner(Protocol):
    """An engine: runs one attempt of a spec, for a tenant whose policy checks every request."""

    async def run(
        self,
        spec: job_spec_pb2.JobSpec,
        on_step: OnStep | None = None,
        *,
        tenant: str | None = None,
        job_id: str = "",
    ) -> Outcome: ...


DEFAULT_ATTEMPT_TIMEOUT = 300.0
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REDIRECTS = 10
# Requests sent with no policy check because the caller named no tenant (the work loop does
# not yet): non-zero means some jobs still run on their admission decision alone.
UNCHECKED = Counter(
    "accord_executor_unchecked_requests_total",
    "Requests sent without a per-request policy check (no tenant was given)",
)
REDIRECTS = {301, 302, 303, 307, 308}


@dataclass
class Outcome:
    """One attempt's result; `failure` is None when every step succeeded."""

    result: job_result_pb2.JobResult
    failure: r.Failure | None


@dataclass
class _Attempt:
    """What one attempt accumulates as its steps run."""

    deadline: float
    caller: Caller | None = None  # None: the caller named no tenant, so nothing is checked
    step_deadline: float = 0.0
    step_index: int = 0
    requests: list[job_result_pb2.RequestRecord] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    page: Page | None = None
    # Cookies live per job, never in the shared session: jobs of different tenants share it.
    cookies: aiohttp.CookieJar = field(default_factory=lambda: aiohttp.CookieJar(unsafe=True))


class HttpEngine:
    def __init__(
        self,
        *,
        concurrency: int,
        user_agent: str,
        guard: Guard | None = None,
        ca_file: str | None = None,
    ) -> None:
        """`ca_file`: PEM certificates trusted besides the system's (a private CA)."""
        self._concurrency = concurrency
        self._user_agent = user_agent
        self._guard = guard
        self._pools: TenantPools | None = None
        # aiohttp's own default context unless a private CA is added to it.
        self._tls: ssl.SSLContext | bool = True
        if ca_file:
            self._tls = ssl.create_default_context()
            self._tls.load_verify_locations(cafile=ca_file)

    async def start(self) -> None:
        self._pools = TenantPools(self._new_session)

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=_PeerNotingConnector(limit=self._concurrency, ssl=self._tls),
            headers={"User-Agent": self._user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),
            # Limits come from the step and attempt timeouts, not from the session.
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._guard is not None:
            await self._guard.close()
        if self._pools is not None:
            await self._pools.close()

    async def run(
        self,
        spec: job_spec_pb2.JobSpec,
        on_step: OnStep | None = None,
        *,
        tenant: str | None = None,
        job_id: str = "",
    ) -> Outcome:
        """Run the spec's steps; with a `tenant`, every request is checked on its behalf."""
        started = time.monotonic()
        limit = (
            spec.attempt_timeout.ToTimedelta().total_seconds()
            if spec.HasField("attempt_timeout")
            else DEFAULT_ATTEMPT_TIMEOUT
        )
        attempt = _Attempt(deadline=started + limit)
        if tenant is not None and self._guard is not None:
            attempt.caller = Caller(tenant, job_id, spec.engine, spec.authorization_mode)
        failure = static_failure(spec)
        steps: list[job_result_pb2.StepResult] = []
        for index, step in enumerate(spec.steps):
            if failure is None:
                with tracing.span(f"step.{step.WhichOneof('action')}", attributes={"index": index}):
                    result, failure = await self._step(attempt, index, step)
            else:
                result = r.step_result(index, step, r.SKIPPED)
            steps.append(result)
            if on_step is not None:
                on_step(result)
        outputs, failure = outputs_of(spec, attempt.outputs, failure)
        return Outcome(
            job_result_pb2.JobResult(
                outputs=outputs,
                steps=steps,
                duration=r.duration(time.monotonic() - started),
                requests=attempt.requests,
            ),
            failure,
        )

    async def _step(
        self, attempt: _Attempt, index: int, step: job_spec_pb2.Step
    ) -> tuple[job_result_pb2.StepResult, r.Failure | None]:
        started = time.monotonic()
        timeout = attempt.deadline - started
        if step.HasField("timeout") and step.timeout.ToTimedelta().total_seconds() > 0:
            timeout = min(timeout, step.timeout.ToTimedelta().total_seconds())
        status = 0
        attempt.step_deadline, attempt.step_index = started + timeout, index
        try:
            if timeout <= 0:
                raise TimeoutError  # the attempt's time ran out before this step began
            async with asyncio.timeout(timeout):
                output, status = await self._act(attempt, step)
        except TimeoutError:
            failure = r.Failure(r.TIMEOUT, f"step {index} timed out after {max(timeout, 0):.3g}s")
        except r.StepFailed as exc:
            failure = exc.failure
        except TemplateError as exc:
            failure = r.Failure(r.TEMPLATE_ERROR, str(exc))
        else:
            if step.name:
                attempt.outputs[step.name] = output
            return r.step_result(
                index,
                step,
                r.SUCCEEDED,
                seconds=time.monotonic() - started,
                output=reported(step, output),
                http_status=status,
            ), None
        return r.step_result(
            index, step, r.FAILED, seconds=time.monotonic() - started, error=failure.message
        ), failure

    async def _act(self, attempt: _Attempt, step: job_spec_pb2.Step) -> tuple[Any, int]:
        """Run one step's action: (its output, the HTTP status it received or 0)."""
        kind = step.WhichOneof("action")
        if kind not in {"request", "extract", "assertion", "wait_for"} or (
            job_spec_pb2.ENGINE_HTTP not in kinds.engines_for(step)
        ):
            raise r.StepFailed(r.STEP_NOT_SUPPORTED, unsupported(attempt.step_index, step))
        if kind == "request":
            return await self._request(attempt, step.request)
        if kind == "extract":
            return _page(attempt).extract(step.extract), 0
        if kind == "assertion":
            expected = render_text(step.assertion.text_contains, attempt.outputs)
            _page(attempt).check(step.assertion, expected)
            return True, 0
        if kind == "wait_for" and step.wait_for.WhichOneof("condition") == "delay":
            await asyncio.sleep(step.wait_for.delay.ToTimedelta().total_seconds())
            return None, 0
        raise r.StepFailed(r.STEP_NOT_SUPPORTED, unsupported(attempt.step_index, step))

    async def _request(
        self, attempt: _Attempt, step: job_spec_pb2.RequestStep
    ) -> tuple[dict[str, Any], int]:
        """Send the step's request and follow its redirects, each hop decided on its own."""
        url = render_text(step.url, attempt.outputs)
        method, body = step.method or "GET", step.body or None
        headers = _headers(step, attempt)
        for _ in range(MAX_REDIRECTS + 1):
            response, text = await self._traced_send(attempt, method, url, headers, body)
            location = response.headers.get("Location")
            if response.status not in REDIRECTS or not location:
                attempt.page = Page(url, response.status, text)
                return {"status": response.status, "url": url, "body": text}, response.status
            url = _redirected(url, location)
            if response.status == 303 or (response.status in {301, 302} and method == "POST"):
                method, body = "GET", None  # as browsers do; 307 and 308 keep both
        raise r.StepFailed(r.TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects")

    async def _traced_send(
        self, attempt: _Attempt, method: str, url: str, headers: dict[str, str], body: Any
    ) -> tuple[aiohttp.ClientResponse, str]:
        """`_send` in an `http.request` span. A failure is said on the span by its code and
        the policy's reasons, as the browser's are, not by its message, which names the URL."""
        with request_span(method, url) as span:
            try:
                response, text = await self._send(attempt, method, url, headers, body)
            except r.StepFailed as exc:
                record = attempt.requests[-1] if attempt.requests else None
                failed(span, exc.failure, record if record and record.url == url else None)
                stopped = exc
            else:
                answered(span, response.status)
                return response, text
        raise stopped  # outside the span, so the span keeps the status given above

    async def _send(
        self, attempt: _Attempt, method: str, url: str, headers: dict[str, str], body: Any
    ) -> tuple[aiohttp.ClientResponse, str]:
        """One request, to the checked address; the response and its body."""
        assert self._pools is not None, "HttpEngine.start() was not called"
        target = _target(url)
        record = job_result_pb2.RequestRecord(step_index=attempt.step_index, url=url)
        attempt.requests.append(record)
        admitted = None
        if attempt.caller is not None and self._guard is not None:
            admitted = await self._guard.admit(attempt.caller, url, attempt.step_deadline, record)
        else:
            UNCHECKED.inc()
        hop = {**headers, **_cookies(attempt, target, headers)}
        where: str | URL = target
        server_hostname = None
        if admitted is not None:
            pinned = pin(url, admitted.address)
            where, server_hostname = URL(pinned.url, encoded=True), pinned.server_hostname
            hop["Host"] = pinned.host_header
            record.address = admitted.address
        tenant = attempt.caller.tenant if attempt.caller is not None else ""
        peers: list[dict[str, Any]] = []
        noted = _PEER.set(peers)
        try:
            async with (
                self._pools.session(tenant) as session,
                session.request(
                    method,
                    where,
                    headers=hop,
                    data=body,
                    allow_redirects=False,
                    server_hostname=server_hostname,
                ) as response,
            ):
                record.sent, record.http_status = True, response.status
                _note_certificate(peers, record)
                text = await _read(response)
                attempt.cookies.update_cookies(response.cookies, target)
        except aiohttp.InvalidURL as exc:
            raise r.StepFailed(r.INVALID_URL, f"invalid URL {url!r}: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise r.StepFailed(r.HTTP_ERROR, f"{method} {url} failed: {exc!r}") from None
        finally:
            _PEER.reset(noted)
            if admitted is not None and attempt.caller is not None and self._guard is not None:
                self._guard.release(attempt.caller, admitted.permit_id)
        return response, text


# The certificate of the connection the current request went out on: set by the connector
# as it hands the connection over (the response may release it before its headers are read).
_PEER: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "accord_executor_peer", default=None
)


class _PeerNotingConnector(aiohttp.TCPConnector):
    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
        connection = await super().connect(req, traces, timeout)
        holder = _PEER.get()
        transport = connection.transport
        if holder is not None and transport is not None:
            tls = transport.get_extra_info("ssl_object")
            if isinstance(tls, ssl.SSLObject):
                holder.append(tls.getpeercert() or {})
        return connection


def _note_certificate(peers: list[dict[str, Any]], record: job_result_pb2.RequestRecord) -> None:
    """Record when the (verified) server certificate expires, for uptime checks."""
    expires = peers[-1].get("notAfter") if peers else None
    if isinstance(expires, str):
        seconds = ssl.cert_time_to_seconds(expires)
        record.certificate_expire_time.CopyFrom(timestamp_pb2.Timestamp(seconds=int(seconds)))


def unsupported(index: int, step: job_spec_pb2.Step) -> str:
    what = kinds.describe(step)
    return f"step {index} ({what}): {what} steps need the browser engine; this job uses http"


def static_failure(spec: job_spec_pb2.JobSpec) -> r.Failure | None:
    problems = template_problems(spec)
    if not problems:
        return None
    return r.Failure(r.TEMPLATE_ERROR, "; ".join(f"{f}: {d}" for f, d in problems))


def outputs_of(
    spec: job_spec_pb2.JobSpec, outputs: dict[str, Any], failure: r.Failure | None
) -> tuple[struct_pb2.Struct, r.Failure | None]:
    """The result template over the outputs; a failed attempt returns what it saved."""
    if failure is not None:
        return r.to_struct(outputs), failure
    try:
        return r.job_outputs(spec.result_template, outputs), None
    except TemplateError as exc:
        return r.to_struct(outputs), r.Failure(r.TEMPLATE_ERROR, str(exc))


def reported(step: job_spec_pb2.Step, output: Any) -> struct_pb2.Value | None:
    """What a step's result shows: what it extracted, or a named request's response.

    An unnamed request's body is not echoed into the result: nothing asked to keep it, and
    bodies are the bulk of a result's size.
    """
    kind = step.WhichOneof("action")
    if kind == "extract" or (kind == "request" and step.name):
        return r.to_value(output)
    return None


def _page(attempt: _Attempt) -> Page:
    if attempt.page is None:
        raise r.StepFailed(r.NO_RESPONSE, "no response yet: a request step must come first")
    return attempt.page


def _target(url: str) -> URL:
    try:
        target = URL(url)
    except ValueError as exc:
        raise r.StepFailed(r.INVALID_URL, f"invalid URL {url!r}: {exc}") from None
    if target.scheme not in {"http", "https"} or not target.host:
        raise r.StepFailed(r.INVALID_URL, f"not an absolute http(s) URL: {url!r}")
    return target


def _headers(step: job_spec_pb2.RequestStep, attempt: _Attempt) -> dict[str, str]:
    # The engine's own User-Agent always stands: Accord identifies itself honestly.
    headers = {
        k: render_text(v, attempt.outputs)
        for k, v in step.headers.items()
        if k.lower() != "user-agent"
    }
    # Names and literal values were checked at submission; a rendered value is checked here,
    # before it could split the request or the connection it travels on.
    for name, value in headers.items():
        if any(c in value for c in "\r\n\x00"):
            raise r.StepFailed(
                r.TEMPLATE_ERROR, f"header {name} renders to a value with CR, LF or NUL"
            )
    return headers


def _cookies(attempt: _Attempt, target: URL, headers: dict[str, str]) -> dict[str, str]:
    """The job's own cookies for this URL, unless the step set its own Cookie header."""
    jar = attempt.cookies.filter_cookies(target)
    if not jar or any(k.lower() == "cookie" for k in headers):
        return {}
    return {"Cookie": "; ".join(f"{name}={m.value}" for name, m in jar.items())}


def _redirected(url: str, location: str) -> str:
    try:
        return str(URL(url).join(URL(location)))
    except ValueError as exc:
        raise r.StepFailed(r.INVALID_URL, f"bad redirect Location {location!r}: {exc}") from None


async def _read(response: aiohttp.ClientResponse) -> str:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise r.StepFailed(
                r.RESPONSE_TOO_LARGE, f"response body exceeds {MAX_BODY_BYTES} bytes"
            )
        chunks.append(chunk)
    data = b"".join(chunks)
    try:
        return data.decode(response.charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")
