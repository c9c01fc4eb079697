"""`accord workflows update`: its options, and the UpdateWorkflowRequest they make. Only the
options given are changed (each names its field in the update mask); the workflow's etag is
the one just read unless `--etag` names another."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2

from accord.common.v1 import job_spec_pb2 as js
from accord.orchestrator.v1 import workflow_pb2 as wf
from accord.orchestrator.v1 import workflow_service_pb2 as pb
from accord_cli import schedules
from accord_cli.auth import ttl
from accord_cli.output import USAGE, Exit

ENGINES = {"http": js.ENGINE_HTTP, "browser": js.ENGINE_BROWSER}
MODES = {
    "public": js.AUTHORIZATION_MODE_PUBLIC,
    "customer-authorized": js.AUTHORIZATION_MODE_CUSTOMER_AUTHORIZED,
    "internal": js.AUTHORIZATION_MODE_INTERNAL,
}

# `update` options that set one field of the workflow's kind: option -> (kind, field).
KIND_OPTIONS = {
    "selector": ("change_detection", "selector"),
    "ignore": ("change_detection", "ignore_patterns"),
    "threshold": ("change_detection", "threshold"),
    "screenshot": ("change_detection", "screenshot"),
    "item_selector": ("job_postings", "item_selector"),
    "field": ("job_postings", "fields"),
    "key_field": ("job_postings", "key_field"),
    "next_page": ("job_postings", "next_page_selector"),
    "max_pages": ("job_postings", "max_pages"),
    "min_status": ("uptime", "min_status"),
    "max_status": ("uptime", "max_status"),
    "max_latency": ("uptime", "max_latency"),
    "expect_text": ("uptime", "expected_text"),
    "expect_selector": ("uptime", "expected_selector"),
    "cert_days": ("uptime", "min_certificate_days"),
    "failures": ("uptime", "failure_threshold"),
}


def add_options(update: Any) -> None:
    update.add_argument("workflow_id")
    update.add_argument("--name")
    update.add_argument("--url", help="the page, listing or URL checked")
    update.add_argument("--selector", help="change: the part of the page to watch")
    update.add_argument("--ignore", action="append", help="change: RE2 of lines (replaces)")
    update.add_argument("--threshold", type=float, help="change: 0 to 1")
    update.add_argument(
        "--screenshot", action=argparse.BooleanOptionalAction, help="change: keep screenshots"
    )
    update.add_argument("--item-selector", help="postings: one posting")
    update.add_argument(
        "--field", type=schedules.label, action="append", help="postings: name=selector (replaces)"
    )
    update.add_argument("--key-field")
    update.add_argument("--next-page")
    update.add_argument("--max-pages", type=int)
    update.add_argument("--min-status", type=int)
    update.add_argument("--max-status", type=int)
    update.add_argument("--max-latency", type=ttl)
    update.add_argument("--expect-text")
    update.add_argument("--expect-selector")
    update.add_argument("--cert-days", type=int)
    update.add_argument("--failures", type=int)
    update.add_argument("--every", type=ttl, help="run interval, e.g. 15m")
    update.add_argument("--cron", help="run on a cron calendar instead")
    update.add_argument("--tz", default="", help="IANA time zone of --cron (default UTC)")
    update.add_argument("--engine", choices=sorted(ENGINES))
    update.add_argument("--mode", choices=sorted(MODES))
    update.add_argument("--add-webhook", action="append", default=[], metavar="URL")
    update.add_argument("--remove-webhook", action="append", default=[], metavar="WEBHOOK_ID")
    update.add_argument(
        "--rotate-secret",
        action="append",
        default=[],
        metavar="WEBHOOK_ID",
        help="give this webhook the secret of $ACCORD_WEBHOOK_SECRET or --webhook-secret-file",
    )
    update.add_argument("--webhook-secret-file", type=Path)
    update.add_argument("--etag", help="default: the current one, read first")
    update.add_argument("--request-id", default=None)


def request(
    args: argparse.Namespace, current: wf.Workflow, secret: Callable[[argparse.Namespace], str]
) -> pb.UpdateWorkflowRequest:
    """The update the options ask of `current`: the fields they name, and nothing else."""
    kind = current.WhichOneof("kind") or ""
    w = wf.Workflow(workflow_id=args.workflow_id, etag=args.etag or current.etag)
    paths: list[str] = []
    if args.name is not None:
        w.display_name, paths = args.name, [*paths, "display_name"]
    if args.url is not None:
        getattr(w, kind).url, paths = args.url, [*paths, f"{kind}.url"]
    for option, (owner, name) in KIND_OPTIONS.items():
        value = getattr(args, option)
        if value is None:
            continue
        if owner != kind:
            flag = "--" + option.replace("_", "-")
            raise Exit(USAGE, f"{flag} is for {owner} workflows; this one is {kind}")
        _set(getattr(w, kind), name, value)
        paths.append(f"{kind}.{name}")
    if args.cron:
        w.calendar.cron, w.calendar.time_zone = args.cron, args.tz
        paths.append("calendar")
    elif args.every:
        w.calendar.interval.FromTimedelta(args.every)
        paths.append("calendar")
    if args.engine is not None:
        w.engine, paths = ENGINES[args.engine], [*paths, "engine"]
    if args.mode is not None:
        w.authorization_mode, paths = MODES[args.mode], [*paths, "authorization_mode"]
    if args.add_webhook or args.remove_webhook or args.rotate_secret:
        w.webhooks.extend(_webhooks(args, current, secret))
        paths.append("webhooks")
    return pb.UpdateWorkflowRequest(
        request_id=args.request_id or uuid.uuid4().hex,
        workflow=w,
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


def _set(message: Any, name: str, value: Any) -> None:
    if name == "max_latency":
        message.max_latency.FromTimedelta(value)
    elif name == "fields":
        message.fields.update(dict(value))
    elif name == "ignore_patterns":
        message.ignore_patterns.extend(value)
    else:
        setattr(message, name, value)


def _webhooks(
    args: argparse.Namespace, current: wf.Workflow, read: Callable[[argparse.Namespace], str]
) -> list[wf.Webhook]:
    """The workflow's webhooks after the options: kept ones by id (their secrets kept unless
    rotated), the removed ones left out, the added ones new."""
    known = {h.webhook_id for h in current.webhooks}
    unknown = sorted(set(args.remove_webhook + args.rotate_secret) - known)
    if unknown:
        raise Exit(USAGE, f"not webhooks of this workflow: {', '.join(unknown)}")
    secret = read(args) if args.rotate_secret or args.add_webhook else ""
    hooks = []
    for hook in current.webhooks:
        if hook.webhook_id in args.remove_webhook:
            continue
        kept = wf.Webhook(webhook_id=hook.webhook_id, url=hook.url, kinds=hook.kinds)
        if hook.webhook_id in args.rotate_secret:
            kept.secret = secret
        hooks.append(kept)
    hooks += [wf.Webhook(url=url, secret=secret) for url in args.add_webhook]
    return hooks
