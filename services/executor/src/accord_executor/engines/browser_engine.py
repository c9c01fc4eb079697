"""The browser engine: runs a job's steps in a fresh Chromium context behind the proxy.

Each attempt gets its own proxy listener (so every request it makes is checked for its
tenant, step by step) and its own context (so nothing of another job is visible). The
request log the proxy keeps becomes the result's `requests`; screenshots become artifacts.
"""

from __future__ import annotations

import asyncio
import time

from playwright.async_api import Error as PlaywrightError

from accord.common.v1 import job_result_pb2, job_spec_pb2
from accord_executor.artifacts import ArtifactStore
from accord_executor.domain import results as r
from accord_executor.engines import browser_steps as act
from accord_executor.engines.chromium import BrowserHost
from accord_executor.engines.guard import Caller
from accord_executor.engines.http import (
    DEFAULT_ATTEMPT_TIMEOUT,
    OnStep,
    Outcome,
    outputs_of,
    reported,
    static_failure,
)
from accord_executor.engines.proxy import PolicingProxy, Ticket
from accord_kit import jobspec as kinds
from accord_kit import tracing
from accord_kit.jobspec import TemplateError

CRASHED = "Chromium exited mid-attempt"


class BrowserEngine:
    def __init__(self, host: BrowserHost, proxy: PolicingProxy, store: ArtifactStore) -> None:
        self._host = host
        self._proxy = proxy
        self._store = store

    async def run(
        self,
        spec: job_spec_pb2.JobSpec,
        on_step: OnStep | None = None,
        *,
        tenant: str | None = None,
        job_id: str = "",
    ) -> Outcome:
        """Run the spec's steps; every request is checked for `tenant` (none: all refused)."""
        started = time.monotonic()
        limit = (
            spec.attempt_timeout.ToTimedelta().total_seconds()
            if spec.HasField("attempt_timeout")
            else DEFAULT_ATTEMPT_TIMEOUT
        )
        deadline = started + limit
        caller = Caller(tenant, job_id, spec.engine, spec.authorization_mode) if tenant else None
        ticket = Ticket(caller)
        steps: list[job_result_pb2.StepResult] = []
        failure = static_failure(spec)
        state: act.PageState | None = None
        try:
            async with self._proxy.listen(ticket) as port, self._host.page(port) as (ctx, page):
                await self._proxy.watch(ctx, ticket)
                state = act.PageState(page, ticket, tenant or "", self._store)
                for index, step in enumerate(spec.steps):
                    if failure is None:
                        kind = step.WhichOneof("action")
                        with tracing.span(f"step.{kind}", attributes={"index": index}):
                            # The proxy's spans start outside this task: they find it here.
                            ticket.traceparent = tracing.traceparent()
                            result, failure = await self._step(state, deadline, index, step)
                    else:
                        result = r.step_result(index, step, r.SKIPPED)
                    steps.append(result)
                    if on_step is not None:
                        on_step(result)
        except PlaywrightError as exc:  # the browser could not give a context at all
            failure = r.Failure(r.EXECUTOR_ERROR, f"no browser context: {act.first_line(exc)}")
        saved = state.outputs if state is not None else {}
        outputs, failure = outputs_of(spec, saved, failure)
        return Outcome(
            job_result_pb2.JobResult(
                outputs=outputs,
                steps=steps,
                artifacts=state.artifacts if state is not None else [],
                duration=r.duration(time.monotonic() - started),
                requests=ticket.requests,
            ),
            failure,
        )

    async def _step(
        self, s: act.PageState, deadline: float, index: int, step: job_spec_pb2.Step
    ) -> tuple[job_result_pb2.StepResult, r.Failure | None]:
        started = time.monotonic()
        timeout = deadline - started
        if step.HasField("timeout") and step.timeout.ToTimedelta().total_seconds() > 0:
            timeout = min(timeout, step.timeout.ToTimedelta().total_seconds())
        s.step_deadline = s.ticket.step_deadline = started + timeout
        s.ticket.step_index = index
        what = _what(step)
        try:
            if timeout <= 0:
                raise TimeoutError  # the attempt's time ran out before this step began
            async with asyncio.timeout(timeout):
                output = await act.ACTIONS[step.WhichOneof("action") or ""](s, index, step)
        except TimeoutError:
            failure = r.Failure(r.TIMEOUT, f"step {index} {what} timed out after {timeout:.3g}s")
        except r.StepFailed as exc:
            failure = r.Failure(exc.failure.code, f"step {index} {what}: {exc.failure.message}")
        except TemplateError as exc:
            failure = r.Failure(r.TEMPLATE_ERROR, f"step {index} {what}: {exc}")
        else:
            if step.name:
                s.outputs[step.name] = output
            return r.step_result(
                index,
                step,
                r.SUCCEEDED,
                seconds=time.monotonic() - started,
                output=reported(step, output),
                http_status=s.status if step.WhichOneof("action") == "request" else 0,
            ), None
        if not s.page.context.browser or not s.page.context.browser.is_connected():
            failure = r.Failure(r.EXECUTOR_ERROR, f"step {index} {what}: {CRASHED}")
        return r.step_result(
            index, step, r.FAILED, seconds=time.monotonic() - started, error=failure.message
        ), failure


def _what(step: job_spec_pb2.Step) -> str:
    """How errors name a step: its kind and, where it has one, its selector."""
    kind = step.WhichOneof("action") or ""
    selector = getattr(getattr(step, kind), "selector", "") if kind else ""
    if kind == "wait_for" and step.wait_for.WhichOneof("condition") != "selector":
        selector = ""
    if kind == "assertion":
        selector = step.assertion.selector_present or step.assertion.selector_absent
    named = f" {step.name!r}" if step.name else ""
    return f"({kinds.describe(step)}{named}{f' {selector!r}' if selector else ''})"
