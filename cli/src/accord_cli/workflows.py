"""`accord workflows`: create, list, get, update, results, run, pause, resume, delete; and
`accord webhooks`: test a workflow's webhook, read its delivery log.

    accord workflows create news --change https://example.com/news --selector main \\
        --ignore '^Updated .*' --every 15m --webhook https://hooks.example.com/accord
    accord workflows create careers --postings https://example.com/jobs \\
        --item-selector li.job --field title=.title --field link=a@href --next-page a.next
    accord workflows create status --uptime https://example.com/ --expect-text Welcome \\
        --max-latency 2s --failures 3
    accord workflows update ID --selector '#news' --every 30m --rotate-secret WEBHOOK_ID
    accord workflows results ID
    accord webhooks test WORKFLOW_ID WEBHOOK_ID

A webhook's signing secret is read from $ACCORD_WEBHOOK_SECRET or --webhook-secret-file,
never from the command line (where other users of the machine could read it). Address, token,
TLS, profile, output options and exit codes are every group's (`accord_cli.connect`,
`accord_cli.output`).
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as pb
from accord.orchestrator.v1 import workflow_service_pb2_grpc
from accord_cli import schedules, workflow_update
from accord_cli.auth import ttl
from accord_cli.connect import add_connection_options, resolve
from accord_cli.output import USAGE, Exit, Printer, add_output_options, command, table

ENGINES, MODES = workflow_update.ENGINES, workflow_update.MODES
Run = Callable[[argparse.Namespace, Any], Message]


def register(commands: Any) -> None:
    top = commands.add_parser("workflows", help="change detection, job postings, uptime")
    sub = top.add_subparsers(dest="workflows_command", required=True)
    _register_workflows(sub)
    hooks = commands.add_parser("webhooks", help="workflow webhooks")
    _register_webhooks(hooks.add_subparsers(dest="webhooks_command", required=True))


def _command(sub: Any, name: str, run: Run, help: str) -> Any:
    p = sub.add_parser(name, help=help)
    add_connection_options(p, ("orchestrator",))
    add_output_options(p)
    p.set_defaults(run=_runner(run))
    return p


def _register_workflows(sub: Any) -> None:
    create = _command(sub, "create", _create, "create a workflow")
    create.add_argument("name")
    kind = create.add_mutually_exclusive_group(required=True)
    kind.add_argument("--change", metavar="URL", help="watch this page for changes")
    kind.add_argument("--postings", metavar="URL", help="watch this listing for postings")
    kind.add_argument("--uptime", metavar="URL", help="check that this URL is up")
    create.add_argument("--selector", default="", help="change: the part of the page to watch")
    create.add_argument("--ignore", action="append", default=[], help="change: RE2 of lines")
    create.add_argument("--threshold", type=float, default=0.0, help="change: 0 to 1")
    create.add_argument(
        "--screenshot", action="store_true", help="change: keep screenshots (browser engine)"
    )
    create.add_argument("--item-selector", default="", help="postings: one posting")
    create.add_argument(
        "--field", type=schedules.label, action="append", default=[], help="name=selector[@attr]"
    )
    create.add_argument("--key-field", default="", help="postings: default link")
    create.add_argument("--next-page", default="", help="postings: next-page link selector")
    create.add_argument("--max-pages", type=int, default=0)
    create.add_argument("--min-status", type=int, default=0)
    create.add_argument("--max-status", type=int, default=0)
    create.add_argument("--max-latency", type=ttl)
    create.add_argument("--expect-text", default="")
    create.add_argument("--expect-selector", default="")
    create.add_argument("--cert-days", type=int, default=0)
    create.add_argument("--failures", type=int, default=0, help="uptime: failures before down")
    create.add_argument("--every", type=ttl, help="run interval (default 1h), e.g. 15m")
    create.add_argument("--cron", help="run on a cron calendar instead")
    create.add_argument("--tz", default="", help="IANA time zone of --cron (default UTC)")
    create.add_argument("--engine", choices=sorted(ENGINES), default="http")
    create.add_argument("--mode", choices=sorted(MODES), default="public")
    create.add_argument("--webhook", action="append", default=[], metavar="URL")
    create.add_argument("--webhook-secret-file", type=Path)
    create.add_argument("--request-id", default=None)

    update = _command(sub, "update", _update, "change a workflow (the options given)")
    workflow_update.add_options(update)

    listing = _command(sub, "list", _list, "list workflows")
    listing.add_argument("--page-size", type=int, default=0)
    listing.add_argument("--page-token", default="")

    for name, run, help in (
        ("get", _get, "show a workflow and its status"),
        ("delete", _delete, "delete a workflow, its schedule and results"),
        ("resume", _resume, "resume a paused workflow"),
    ):
        _command(sub, name, run, help).add_argument("workflow_id")
    pause = _command(sub, "pause", _pause, "stop a workflow running")
    pause.add_argument("workflow_id")
    pause.add_argument("--note", default="")
    run = _command(sub, "run", _run, "run the check now")
    run.add_argument("workflow_id")
    run.add_argument("--request-id", default=None)
    results = _command(sub, "results", _results, "the results history, newest first")
    results.add_argument("workflow_id")
    results.add_argument("--page-size", type=int, default=0)
    results.add_argument("--page-token", default="")


def _register_webhooks(sub: Any) -> None:
    test = _command(sub, "test", _test, "send a test notification now")
    test.add_argument("workflow_id")
    test.add_argument("webhook_id")
    test.add_argument("--request-id", default=None)
    log = _command(sub, "deliveries", _deliveries, "a webhook's delivery log")
    log.add_argument("workflow_id")
    log.add_argument("webhook_id")
    log.add_argument("--page-size", type=int, default=0)
    log.add_argument("--page-token", default="")


def _secret(args: argparse.Namespace) -> str:
    if args.webhook_secret_file:
        return str(args.webhook_secret_file.read_text().strip())
    secret = os.environ.get("ACCORD_WEBHOOK_SECRET", "")
    if not secret:
        raise Exit(USAGE, "webhooks need $ACCORD_WEBHOOK_SECRET or --webhook-secret-file")
    return secret


def _workflow(args: argparse.Namespace) -> wf.Workflow:
    w = wf.Workflow(
        display_name=args.name, engine=ENGINES[args.engine], authorization_mode=MODES[args.mode]
    )
    if args.change:
        c = w.change_detection
        c.url, c.selector, c.threshold = args.change, args.selector, args.threshold
        c.ignore_patterns.extend(args.ignore)
        c.screenshot = args.screenshot
    elif args.postings:
        p = w.job_postings
        p.url, p.item_selector, p.key_field = args.postings, args.item_selector, args.key_field
        p.next_page_selector, p.max_pages = args.next_page, args.max_pages
        p.fields.update(dict(args.field))
    else:
        u = w.uptime
        u.url, u.min_status, u.max_status = args.uptime, args.min_status, args.max_status
        u.expected_text, u.expected_selector = args.expect_text, args.expect_selector
        u.min_certificate_days, u.failure_threshold = args.cert_days, args.failures
        if args.max_latency is not None:
            u.max_latency.FromTimedelta(args.max_latency)
    if args.cron:
        w.calendar.cron, w.calendar.time_zone = args.cron, args.tz
    else:
        w.calendar.interval.FromSeconds(int(args.every.total_seconds()) if args.every else 3600)
    if args.webhook:
        secret = _secret(args)
        w.webhooks.extend(wf.Webhook(url=url, secret=secret) for url in args.webhook)
    return w


def _create(args: argparse.Namespace, stub: Any) -> Any:
    request_id = args.request_id or uuid.uuid4().hex
    return stub.CreateWorkflow(
        pb.CreateWorkflowRequest(request_id=request_id, workflow=_workflow(args)), **_md(args)
    )


def _update(args: argparse.Namespace, stub: Any) -> Any:
    current = _get(args, stub).workflow
    request = workflow_update.request(args, current, _secret)
    return stub.UpdateWorkflow(request, **_md(args))


def _list(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.ListWorkflowsRequest(page_size=args.page_size, page_token=args.page_token)
    return stub.ListWorkflows(request, **_md(args))


def _get(args: argparse.Namespace, stub: Any) -> Any:
    return stub.GetWorkflow(pb.GetWorkflowRequest(workflow_id=args.workflow_id), **_md(args))


def _delete(args: argparse.Namespace, stub: Any) -> Any:
    return stub.DeleteWorkflow(pb.DeleteWorkflowRequest(workflow_id=args.workflow_id), **_md(args))


def _pause(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.PauseWorkflowRequest(workflow_id=args.workflow_id, note=args.note)
    return stub.PauseWorkflow(request, **_md(args))


def _resume(args: argparse.Namespace, stub: Any) -> Any:
    return stub.ResumeWorkflow(pb.ResumeWorkflowRequest(workflow_id=args.workflow_id), **_md(args))


def _run(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.RunWorkflowRequest(
        workflow_id=args.workflow_id, request_id=args.request_id or uuid.uuid4().hex
    )
    return stub.RunWorkflow(request, **_md(args))


def _results(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.ListWorkflowResultsRequest(
        workflow_id=args.workflow_id, page_size=args.page_size, page_token=args.page_token
    )
    return stub.ListWorkflowResults(request, **_md(args))


def _test(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.TestWebhookRequest(
        workflow_id=args.workflow_id,
        webhook_id=args.webhook_id,
        request_id=args.request_id or uuid.uuid4().hex,
    )
    return stub.TestWebhook(request, **_md(args))


def _deliveries(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.ListWebhookDeliveriesRequest(
        workflow_id=args.workflow_id,
        webhook_id=args.webhook_id,
        page_size=args.page_size,
        page_token=args.page_token,
    )
    return stub.ListWebhookDeliveries(request, **_md(args))


def _md(args: argparse.Namespace) -> dict[str, Any]:
    conn = resolve(args)
    return {"metadata": conn.metadata() or None, "timeout": conn.timeout}


def _runner(run: Run) -> Callable[[argparse.Namespace], int]:
    @command("workflows")
    def call(args: argparse.Namespace, out: Printer) -> int:
        with resolve(args).channel("orchestrator") as channel:
            response = run(args, workflow_service_pb2_grpc.WorkflowServiceStub(channel))
        out.emit(response, lambda: _render(response))
        return 0

    return call


def _table(rows: Sequence[tuple[str, ...]], token: str) -> str:
    text = table(rows[0], rows[1:])
    return f"{text}\nnext page: --page-token {token}" if token else text


def _name(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", " ") if value else ""


def _render(response: Message) -> str:
    if isinstance(response, pb.ListWorkflowsResponse):
        rows = [("ID", "NAME", "KIND", "TARGET", "STATE", "PAUSED")]
        rows += [
            (
                w.workflow_id,
                w.display_name,
                w.WhichOneof("kind") or "",
                getattr(w, w.WhichOneof("kind") or "uptime").url,
                _name(wf.TargetState, w.status.state, "TARGET_STATE_") or "not checked",
                "yes" if w.paused else "",
            )
            for w in response.workflows
        ]
        return _table(rows, response.next_page_token)
    if isinstance(response, pb.ListWorkflowResultsResponse):
        return "\n".join(_result(r) for r in response.results) or "no results yet"
    if isinstance(response, pb.ListWebhookDeliveriesResponse):
        header = ("ID", "KIND", "STATE", "ATTEMPTS", "LAST STATUS", "CREATED")
        log = [header, *(_delivery_row(d) for d in response.deliveries)]
        return _table(log, response.next_page_token)
    return _render_one(response)


def _render_one(response: Message) -> str:
    if isinstance(response, pb.TestWebhookResponse):
        d = response.delivery
        last = d.attempts[-1] if d.attempts else None
        how = f"HTTP {last.http_status}" if last and last.http_status else ""
        why = last.error_message if last else ""
        state = _name(pb.DeliveryState, d.state, "DELIVERY_STATE_")
        return f"delivery {d.delivery_id}: {state} {how} {why}".rstrip()
    if isinstance(response, pb.RunWorkflowResponse):
        return f"job {response.job_id}" if response.job_id else "skipped: a check is running"
    workflow = getattr(response, "workflow", None)
    if isinstance(workflow, wf.Workflow) and workflow.workflow_id:
        return _block(workflow)
    return "done"


def _block(w: wf.Workflow) -> str:
    kind = w.WhichOneof("kind") or ""
    lines = [
        f"id:        {w.workflow_id}",
        f"name:      {w.display_name}",
        f"kind:      {kind}",
        f"target:    {getattr(w, kind).url if kind else ''}",
        f"calendar:  {schedules.calendar_text(w.calendar)}",
        f"schedule:  {w.schedule_id}",
        f"paused:    {'yes' if w.paused else 'no'}",
        f"state:     {_name(wf.TargetState, w.status.state, 'TARGET_STATE_') or 'not checked'}",
        f"checks:    {w.status.results_count}",
        f"etag:      {w.etag}",
    ]
    lines += [f"webhook:   {h.webhook_id} {h.url}" for h in w.webhooks]
    return "\n".join(lines)


def _result(r: wf.WorkflowResult) -> str:
    at = r.check_time.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")
    outcome = _name(wf.ResultOutcome, r.outcome, "RESULT_OUTCOME_")
    told = _name(wf.NotificationKind, r.notification, "NOTIFICATION_KIND_")
    line = f"{at}  {outcome:<13} {r.message}" + (f"  [notified: {told}]" if told else "")
    if r.WhichOneof("detail") == "page_change" and r.page_change.HasField("screenshot"):
        line += f"\n    screenshot: artifact {r.page_change.screenshot.artifact_id}"
    if r.WhichOneof("detail") == "page_change" and r.page_change.diff:
        line += "\n" + "\n".join(f"    {d}" for d in r.page_change.diff.splitlines())
    if r.WhichOneof("detail") == "postings":
        line += "".join(f"\n    + {p.key}" for p in r.postings.added)
        line += "".join(f"\n    - {p.key}" for p in r.postings.removed)
    return line


def _delivery_row(d: pb.WebhookDelivery) -> tuple[str, ...]:
    last = d.attempts[-1] if d.attempts else None
    return (
        d.delivery_id,
        _name(wf.NotificationKind, d.kind, "NOTIFICATION_KIND_"),
        _name(pb.DeliveryState, d.state, "DELIVERY_STATE_"),
        str(len(d.attempts)),
        str(last.http_status) if last else "",
        d.create_time.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
    )
