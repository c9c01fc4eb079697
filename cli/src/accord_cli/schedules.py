"""`accord schedules`: create, list, get, update, pause, resume, trigger, backfill, delete.

    accord schedules create nightly --cron "30 2 * * *" --tz Europe/Berlin --url https://example.com/
    accord schedules list --label team=web
    accord schedules get ID --json
    accord schedules backfill ID --start 2026-01-01T00:00Z --end 2026-01-02T00:00Z

Next fire times print in the schedule's zone. Address, token, TLS, profile and output
options are every group's (`accord_cli.connect`, `accord_cli.output`). Exit codes: 0 done,
1 the service refused (its status and field violations on stderr), 2 bad usage: this group
has always answered 1 for every refusal, and scripts rely on it.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from accord.common.v1 import job_spec_pb2
from accord.orchestrator.v1 import schedule_pb2, schedule_service_pb2, schedule_service_pb2_grpc
from accord_cli.auth import ttl
from accord_cli.connect import add_connection_options, resolve
from accord_cli.output import Printer, add_output_options, command
from accord_cli.specs import read_spec, url_spec

pb = schedule_service_pb2
OVERLAP = {
    "skip": schedule_pb2.OVERLAP_POLICY_SKIP,
    "buffer-one": schedule_pb2.OVERLAP_POLICY_BUFFER_ONE,
    "allow-all": schedule_pb2.OVERLAP_POLICY_ALLOW_ALL,
    "cancel-previous": schedule_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS,
}


def when(text: str) -> datetime:
    try:
        found = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def register(commands: Any) -> None:
    top = commands.add_parser("schedules", help="schedules that fire jobs")
    sub = top.add_subparsers(dest="schedules_command", required=True)

    def cmd(name: str, run: Callable[[argparse.Namespace, Any], Message], help: str) -> Any:
        p = sub.add_parser(name, help=help)
        add_connection_options(p, ("orchestrator",))
        add_output_options(p)
        p.set_defaults(run=_runner(run))
        return p

    create = cmd("create", _create, "create a schedule")
    create.add_argument("name")
    _calendar_args(create)
    create.add_argument("--url", help="the job: one HTTP request to this URL")
    create.add_argument("--template", type=Path, help="the job: a JobSpec, JSON or YAML")
    create.add_argument("--request-id", default=None)
    _policy_args(create)

    listing = cmd("list", _list, "list schedules")
    state = listing.add_mutually_exclusive_group()
    state.add_argument("--paused", dest="paused", action="store_const", const=True)
    state.add_argument("--active", dest="paused", action="store_const", const=False)
    listing.add_argument("--label", type=label, action="append", default=[])
    listing.add_argument("--page-size", type=int, default=0)
    listing.add_argument("--page-token", default="")

    for name, run, help in (
        ("get", _get, "show a schedule, its next fires and recent actions"),
        ("delete", _delete, "delete a schedule (its jobs are kept)"),
        ("resume", _resume, "resume a paused schedule"),
    ):
        cmd(name, run, help).add_argument("schedule_id")

    pause = cmd("pause", _pause, "stop a schedule firing")
    pause.add_argument("schedule_id")
    pause.add_argument("--note", default="")

    update = cmd("update", _update, "change a schedule (only the options given)")
    update.add_argument("schedule_id")
    update.add_argument("--name")
    _calendar_args(update)
    update.add_argument("--url")
    update.add_argument("--etag", help="default: the current one, read first")
    _policy_args(update)

    trigger = cmd("trigger", _trigger, "fire now")
    trigger.add_argument("schedule_id")
    trigger.add_argument("--request-id", default=None)
    trigger.add_argument("--overlap", choices=sorted(OVERLAP))

    backfill = cmd("backfill", _backfill, "fire every fire time of a past range")
    backfill.add_argument("schedule_id")
    backfill.add_argument("--start", type=when, required=True)
    backfill.add_argument("--end", type=when, required=True)
    backfill.add_argument("--overlap", choices=sorted(OVERLAP))


def _calendar_args(p: Any) -> None:
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--cron", help="5 fields, or 6 with seconds first")
    kind.add_argument("--interval", type=ttl, help="e.g. 90s, 15m, 1h")
    kind.add_argument("--rrule", help="RFC 5545 RRULE; DTSTART is --start")
    kind.add_argument("--once", type=when, help="a single fire at this time")
    p.add_argument("--tz", help="IANA time zone (default UTC)")
    p.add_argument("--start", type=when)
    p.add_argument("--end", type=when)
    p.add_argument("--jitter", type=ttl)


def _policy_args(p: Any) -> None:
    p.add_argument("--overlap", choices=sorted(OVERLAP))
    p.add_argument("--catchup", type=ttl, help="catch-up window, e.g. 10m")
    p.add_argument("--label", type=label, action="append", default=None)


def _spec(args: argparse.Namespace) -> tuple[schedule_pb2.ScheduleSpec, list[str]]:
    """The spec the options describe and the spec fields they set."""
    spec = schedule_pb2.ScheduleSpec()
    paths = []
    if args.cron:
        spec.cron = args.cron
    elif args.interval:
        spec.interval.FromTimedelta(args.interval)
    elif args.rrule:
        spec.rrule = args.rrule
    elif args.once:
        spec.once_time.FromDatetime(args.once)
    if spec.WhichOneof("kind"):
        paths += [f"spec.{spec.WhichOneof('kind')}"]
    if args.tz is not None:
        spec.time_zone, paths = args.tz, [*paths, "spec.time_zone"]
    for name in ("start", "end"):
        if getattr(args, name):
            getattr(spec, f"{name}_time").FromDatetime(getattr(args, name))
            paths.append(f"spec.{name}_time")
    if args.jitter is not None:
        spec.jitter.FromTimedelta(args.jitter)
        paths.append("spec.jitter")
    return spec, paths


def _template(args: argparse.Namespace) -> job_spec_pb2.JobSpec | None:
    if getattr(args, "template", None):
        return read_spec(args.template)
    return url_spec(args.url) if args.url else None


def _policies(args: argparse.Namespace, s: schedule_pb2.Schedule) -> list[str]:
    paths: list[str] = []
    if args.overlap:
        s.overlap_policy, paths = OVERLAP[args.overlap], [*paths, "overlap_policy"]
    if args.catchup is not None:
        s.catchup_window.FromTimedelta(args.catchup)
        paths.append("catchup_window")
    if args.label is not None:
        s.labels.update(dict(args.label))
        paths.append("labels")
    return paths


def _create(args: argparse.Namespace, stub: Any) -> Any:
    spec, _ = _spec(args)
    s = schedule_pb2.Schedule(display_name=args.name, spec=spec)
    template = _template(args)
    if template is not None:
        s.job_template.CopyFrom(template)
    _policies(args, s)
    request_id = args.request_id or uuid.uuid4().hex
    return stub.CreateSchedule(
        pb.CreateScheduleRequest(request_id=request_id, schedule=s), **_md(args)
    )


def _list(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.ListSchedulesRequest(
        page_size=args.page_size, page_token=args.page_token, labels=dict(args.label)
    )
    if args.paused is not None:
        request.paused = args.paused
    return stub.ListSchedules(request, **_md(args))


def _get(args: argparse.Namespace, stub: Any) -> Any:
    return stub.GetSchedule(pb.GetScheduleRequest(schedule_id=args.schedule_id), **_md(args))


def _delete(args: argparse.Namespace, stub: Any) -> Any:
    return stub.DeleteSchedule(pb.DeleteScheduleRequest(schedule_id=args.schedule_id), **_md(args))


def _pause(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.PauseScheduleRequest(schedule_id=args.schedule_id, note=args.note)
    return stub.PauseSchedule(request, **_md(args))


def _resume(args: argparse.Namespace, stub: Any) -> Any:
    return stub.ResumeSchedule(pb.ResumeScheduleRequest(schedule_id=args.schedule_id), **_md(args))


def _update(args: argparse.Namespace, stub: Any) -> Any:
    s = schedule_pb2.Schedule(schedule_id=args.schedule_id)
    s.etag = args.etag or _get(args, stub).schedule.etag
    spec, paths = _spec(args)
    s.spec.CopyFrom(spec)
    if args.name:
        s.display_name, paths = args.name, [*paths, "display_name"]
    template = _template(args)
    if template is not None:
        s.job_template.CopyFrom(template)
        paths.append("job_template")
    paths += _policies(args, s)
    mask = field_mask_pb2.FieldMask(paths=paths)
    return stub.UpdateSchedule(pb.UpdateScheduleRequest(schedule=s, update_mask=mask), **_md(args))


def _trigger(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.TriggerScheduleRequest(
        schedule_id=args.schedule_id,
        request_id=args.request_id or uuid.uuid4().hex,
        overlap_policy=OVERLAP.get(args.overlap or "", 0),  # type: ignore[arg-type]
    )
    return stub.TriggerSchedule(request, **_md(args))


def _backfill(args: argparse.Namespace, stub: Any) -> Any:
    request = pb.BackfillScheduleRequest(
        schedule_id=args.schedule_id,
        overlap_policy=OVERLAP.get(args.overlap or "", 0),  # type: ignore[arg-type]
    )
    request.start_time.FromDatetime(args.start)
    request.end_time.FromDatetime(args.end)
    return stub.BackfillSchedule(request, **_md(args))


def _md(args: argparse.Namespace) -> dict[str, Any]:
    conn = resolve(args)
    return {"metadata": conn.metadata() or None, "timeout": conn.timeout}


def _runner(
    run: Callable[[argparse.Namespace, Any], Message],
) -> Callable[[argparse.Namespace], int]:
    @command("schedules", exits=lambda _: 1)
    def call(args: argparse.Namespace, out: Printer) -> int:
        with resolve(args).channel("orchestrator") as channel:
            response = run(args, schedule_service_pb2_grpc.ScheduleServiceStub(channel))
        out.emit(response, lambda: _render(response))
        return 0

    return call


def _render(response: Message) -> str:
    """Readable text: a table for lists, a block per schedule, plain lines otherwise."""
    if isinstance(response, pb.ListSchedulesResponse):
        rows = [("ID", "NAME", "CALENDAR", "ZONE", "PAUSED", "NEXT FIRE (zone)")]
        for s in response.schedules:
            rows.append(
                (
                    s.schedule_id,
                    s.display_name,
                    _calendar(s.spec),
                    s.spec.time_zone or "UTC",
                    "yes" if s.paused else "",
                    _local(s, 0),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        if response.next_page_token:
            lines.append(f"next page: --page-token {response.next_page_token}")
        return "\n".join(lines)
    schedule = getattr(response, "schedule", None)
    if isinstance(schedule, schedule_pb2.Schedule) and schedule.schedule_id:
        return _block(schedule)
    if isinstance(response, pb.TriggerScheduleResponse):
        return f"job {response.job_id}" if response.job_id else f"no job: {response.action.note}"
    if isinstance(response, pb.BackfillScheduleResponse):
        return "\n".join(_action(a, "UTC") for a in response.actions) or "no fires in the range"
    return "done"


def _block(s: schedule_pb2.Schedule) -> str:
    zone = s.spec.time_zone or "UTC"
    lines = [
        f"id:        {s.schedule_id}",
        f"name:      {s.display_name}",
        f"calendar:  {_calendar(s.spec)} ({zone})",
        f"overlap:   {_overlap_name(s.overlap_policy)}",
        f"paused:    {'yes: ' + s.pause_note if s.paused else 'no'}",
        f"etag:      {s.etag}",
        "next fires:",
        *(f"  {_local(s, i)}" for i in range(len(s.next_fire_times))),
    ]
    if s.labels:
        lines.insert(4, f"labels:    {', '.join(f'{k}={v}' for k, v in sorted(s.labels.items()))}")
    if s.recent_actions:
        lines += ["recent actions:", *(f"  {_action(a, zone)}" for a in s.recent_actions)]
    return "\n".join(lines)


def _overlap_name(value: int) -> str:
    names: dict[int, str] = {v: k for k, v in OVERLAP.items()}
    return names.get(value, "skip")


def _calendar(spec: schedule_pb2.ScheduleSpec) -> str:
    kind = spec.WhichOneof("kind")
    if kind == "interval":
        return f"every {spec.interval.ToTimedelta()}"
    if kind == "once_time":
        return f"once at {spec.once_time.ToDatetime(tzinfo=UTC).isoformat()}"
    return f"{kind} {getattr(spec, kind)}" if kind else "?"


def _local(s: schedule_pb2.Schedule, i: int) -> str:
    if i >= len(s.next_fire_times):
        return ""
    zone = ZoneInfo(s.spec.time_zone or "UTC")
    return s.next_fire_times[i].ToDatetime(tzinfo=UTC).astimezone(zone).isoformat()


def _action(a: schedule_pb2.ScheduleAction, zone: str) -> str:
    at = a.schedule_time.ToDatetime(tzinfo=UTC).astimezone(ZoneInfo(zone)).isoformat()
    what = f"job {a.job_id}" if a.job_id else "skipped"
    count = f" x{a.fire_count}" if a.fire_count > 1 else ""
    return f"{at}  {what}{count}  {a.note}"


# What the workflow commands share with this one: how a calendar reads.
calendar_text = _calendar
