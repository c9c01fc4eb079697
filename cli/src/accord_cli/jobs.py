"""`accord jobs`: create, batch, get, list, watch, cancel and retry jobs.

    accord jobs create --url https://example.com/ --extract title=title --wait
    accord jobs create --spec job.yaml                 JSON or YAML; - for stdin
    accord jobs batch specs.yaml                       a list of specs, all or nothing
    accord jobs list --state queued --state running
    accord jobs get JOB_ID --json
    accord jobs watch JOB_ID                           each change and step; 1 unless SUCCEEDED
    accord jobs cancel JOB_ID --reason "not needed"
    accord jobs retry JOB_ID

Exit codes are `accord_cli.output`'s: 0 done, 1 the job did not succeed (watch, --wait),
2 bad usage or input, 3 not found or not allowed in the job's state, 4 the service failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from accord.common.v1 import decision_pb2, job_result_pb2, job_spec_pb2
from accord.orchestrator.v1 import job_pb2, job_service_pb2_grpc
from accord.orchestrator.v1 import job_service_pb2 as pb
from accord_cli.connect import Connection, add_connection_options, resolve
from accord_cli.output import FAILED, OK, USAGE, Exit, Printer, add_output_options, command, table
from accord_cli.specs import ENGINES, extract, read_spec, read_specs, url_spec
from accord_kit.backoff import Backoff

STATES = {
    s.removeprefix("JOB_STATE_").lower().replace("_", "-"): v
    for s, v in job_pb2.JobState.items()
    if v
}
# A watch follows a job for up to a day; a dropped stream is resumed up to 30 times in a row.
WATCH_FOR, RESUMES = 24 * 3600.0, 30
# The states a job stays in (until RetryJob, for DEAD_LETTER): WatchJob ends there.
TERMINAL = frozenset(
    {
        job_pb2.JOB_STATE_SUCCEEDED,
        job_pb2.JOB_STATE_REJECTED,
        job_pb2.JOB_STATE_DEAD_LETTER,
        job_pb2.JOB_STATE_CANCELLED,
    }
)


def register(commands: Any) -> None:
    top = commands.add_parser("jobs", help="jobs: create, list, watch, cancel, retry")
    sub = top.add_subparsers(dest="jobs_command", required=True)

    def cmd(name: str, help_: str, run: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        add_connection_options(parser, ("orchestrator",))
        add_output_options(parser)
        parser.set_defaults(run=run)
        return parser

    create = cmd("create", "submit a job (a spec file, or --url for one request)", run_create)
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", help="the JobSpec as a JSON or YAML file; - for stdin")
    source.add_argument("--url", help="one request to this URL")
    create.add_argument("--engine", choices=sorted(ENGINES), default="http", help="with --url")
    create.add_argument(
        "--extract", type=extract, action="append", help="with --url: name=css-selector (repeat)"
    )
    create.add_argument("--request-id", default=None, help="idempotency key (default: random)")
    create.add_argument("--wait", action="store_true", help="then watch it to its end")

    batch = cmd("batch", "submit many jobs at once, all or nothing", run_batch)
    batch.add_argument("specs", help="a JSON or YAML list of JobSpecs; - for stdin")
    batch.add_argument("--request-id", default=None, help="idempotency key (default: random)")

    cmd("get", "show a job: state, decision, attempts, result", run_get).add_argument("job_id")

    listing = cmd("list", "list jobs, newest first", run_list)
    listing.add_argument("--state", choices=sorted(STATES), action="append", default=[])
    listing.add_argument("--schedule", default="", help="only jobs this schedule created")
    listing.add_argument("--engine", choices=sorted(ENGINES), default=None)
    listing.add_argument("--page-size", type=int, default=0, help="0 means the server's 100")
    listing.add_argument("--page-token", default="")

    watch = cmd("watch", "follow a job to its end, showing each change and step", run_watch)
    watch.add_argument("job_id")
    watch.add_argument("--after-version", type=int, default=0, help="resume after this version")

    cancel = cmd("cancel", "cancel a job that has not finished", run_cancel)
    cancel.add_argument("job_id")
    cancel.add_argument("--reason", default="", help="recorded on the job and in the audit log")
    cmd("retry", "queue a FAILED or DEAD_LETTER job again", run_retry).add_argument("job_id")


@contextmanager
def _stub(conn: Connection) -> Iterator[job_service_pb2_grpc.JobServiceStub]:
    with conn.channel("orchestrator") as channel:
        yield job_service_pb2_grpc.JobServiceStub(channel)


def _call(args: argparse.Namespace, method: str, request: Any) -> Any:
    conn = resolve(args)
    with _stub(conn) as stub:
        return getattr(stub, method)(request, metadata=conn.metadata(), timeout=conn.timeout)


@command("jobs")
def run_create(args: argparse.Namespace, out: Printer) -> int:
    if args.extract and not args.url:
        raise Exit(USAGE, "--extract goes with --url; put extract steps in the --spec file")
    spec = read_spec(args.spec) if args.spec else url_spec(args.url, args.engine, args.extract)
    request = pb.CreateJobRequest(request_id=args.request_id or uuid.uuid4().hex, spec=spec)
    response = _call(args, "CreateJob", request)
    if not args.wait:
        out.emit(response, lambda: _job_block(response.job))
        return OK
    # Then one JSON object per line, like watch's, so a script reads the lot line by line.
    created = json_format.MessageToJson(response, indent=None)
    out.line(created if out.json else _job_block(response.job))
    args.after_version = response.job.version
    return _follow(args, out, response.job.job_id)


@command("jobs")
def run_batch(args: argparse.Namespace, out: Printer) -> int:
    request = pb.BatchCreateJobsRequest(
        request_id=args.request_id or uuid.uuid4().hex, specs=read_specs(args.specs)
    )
    response = _call(args, "BatchCreateJobs", request)
    out.emit(response, lambda: _jobs_table(response.jobs))
    return OK


@command("jobs")
def run_get(args: argparse.Namespace, out: Printer) -> int:
    job = _call(args, "GetJob", pb.GetJobRequest(job_id=args.job_id)).job
    out.emit(job, lambda: _job_block(job))
    return OK


@command("jobs")
def run_list(args: argparse.Namespace, out: Printer) -> int:
    request = pb.ListJobsRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        states=[STATES[s] for s in args.state],
        schedule_id=args.schedule,
        engine=ENGINES[args.engine] if args.engine else 0,  # type: ignore[arg-type]
    )
    response = _call(args, "ListJobs", request)

    def text() -> str:
        lines = _jobs_table(response.jobs)
        if response.next_page_token:
            lines += f"\nnext page: --page-token {response.next_page_token}"
        return lines

    out.emit(response, text)
    return OK


@command("jobs")
def run_watch(args: argparse.Namespace, out: Printer) -> int:
    return _follow(args, out, args.job_id)


def _follow(args: argparse.Namespace, out: Printer, job_id: str) -> int:
    """Print each state change until the job is terminal, then its steps; exit by outcome.

    A stream the server drops (a restart, a lost connection) is resumed after the last
    version seen, after a backoff, up to RESUMES times in a row.
    """
    conn = resolve(args)
    after, last, lost = args.after_version, None, 0
    backoff = Backoff(initial=0.2, maximum=3.0)
    with _stub(conn) as stub:
        while True:
            request = pb.WatchJobRequest(job_id=job_id, after_version=after)
            try:
                for item in stub.WatchJob(request, metadata=conn.metadata(), timeout=WATCH_FOR):
                    after, last, lost = item.change.version, item.job, 0
                    backoff.reset()
                    out.line(_watch_line(item, out.json))
                if last is None:  # nothing after `after`: the job may have ended before it
                    last = stub.GetJob(
                        pb.GetJobRequest(job_id=job_id), metadata=conn.metadata(), timeout=30
                    ).job
                if last.state in TERMINAL:
                    break
                why = "the stream ended early"
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or lost >= RESUMES:
                    raise
                why = f"{exc.code().name}: {exc.details()}"
            lost += 1
            print(f"accord jobs: {why}; resuming after version {after}", file=sys.stderr)
            time.sleep(backoff.next())
    if not out.json:
        out.line(_outcome_text(last))
    return OK if last.state == job_pb2.JOB_STATE_SUCCEEDED else FAILED


def _watch_line(item: pb.WatchJobResponse, as_json: bool) -> str:
    if as_json:
        return json_format.MessageToJson(item, indent=None)
    return _change_line(item.change)


@command("jobs")
def run_cancel(args: argparse.Namespace, out: Printer) -> int:
    job = _call(args, "CancelJob", pb.CancelJobRequest(job_id=args.job_id, reason=args.reason)).job
    out.emit(job, lambda: _job_block(job))
    return OK


@command("jobs")
def run_retry(args: argparse.Namespace, out: Printer) -> int:
    job = _call(args, "RetryJob", pb.RetryJobRequest(job_id=args.job_id)).job
    out.emit(job, lambda: _job_block(job))
    return OK


def state_name(state: int) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")  # type: ignore[arg-type]


def _time(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def _engine(job: job_pb2.Job) -> str:
    return job_spec_pb2.Engine.Name(job.spec.engine).removeprefix("ENGINE_").lower()


def _jobs_table(jobs: Any) -> str:
    rows = [
        (
            j.job_id,
            state_name(j.state),
            _engine(j),
            _time(j.create_time),
            str(len(j.attempts)),
            j.status_message[:60],
        )
        for j in jobs
    ]
    return table(("JOB ID", "STATE", "ENGINE", "CREATED", "ATTEMPTS", "MESSAGE"), rows)


def _job_block(job: job_pb2.Job) -> str:
    lines = [
        f"job:       {job.job_id}",
        f"state:     {state_name(job.state)}",
        f"engine:    {_engine(job)}",
        f"created:   {_time(job.create_time)}",
        f"finished:  {_time(job.finish_time)}",
        f"version:   {job.version}",
    ]
    if job.schedule_id:
        lines.append(f"schedule:  {job.schedule_id}")
    if job.status_message:
        lines.append(f"message:   {job.status_message}")
    if job.decision.decision_id:
        lines.append(f"decision:  {_decision(job)}")
        lines += [f"  {r.code}: {r.message}" for r in job.decision.reasons]
    if job.attempts:
        lines.append("attempts:")
        lines += [f"  {_attempt(a)}" for a in job.attempts]
    if job.result.steps:
        lines.append("steps:")
        lines += [f"  {_step(s)}" for s in job.result.steps]
    if job.result.outputs.fields:
        lines.append("outputs:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in _values(job.result.outputs).items()]
    return "\n".join(lines)


def _values(message: Message) -> Any:
    """A Struct or Value as plain data; its numbers are doubles, so 200.0 reads as 200."""
    return _integral(json_format.MessageToDict(message))


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _decision(job: job_pb2.Job) -> str:
    d = job.decision
    outcome = decision_pb2.DecisionOutcome.Name(d.outcome).removeprefix("DECISION_OUTCOME_")
    return f"{outcome} (policy revision {d.policy_revision})"


def _attempt(a: job_pb2.Attempt) -> str:
    outcome = job_pb2.AttemptOutcome.Name(a.outcome).removeprefix("ATTEMPT_OUTCOME_")
    outcome = "RUNNING" if outcome == "UNSPECIFIED" else outcome
    error = f"  {a.error_code}: {a.error_message}" if a.error_code or a.error_message else ""
    return f"#{a.number} {outcome} on {a.worker_id or '?'} from {_time(a.start_time)}{error}"


def _step(s: job_result_pb2.StepResult) -> str:
    status = job_result_pb2.StepStatus.Name(s.status).removeprefix("STEP_STATUS_")
    parts = [f"{s.index}", s.name or "-", status]
    if s.http_status:
        parts.append(f"HTTP {s.http_status}")
    if s.duration.seconds or s.duration.nanos:
        parts.append(f"{s.duration.ToTimedelta().total_seconds() * 1000:.0f} ms")
    if s.HasField("output"):
        parts.append(json.dumps(_values(s.output))[:80])
    if s.error_message:
        parts.append(s.error_message)
    return "  ".join(parts)


def _change_line(change: job_pb2.JobStateChange) -> str:
    before = state_name(change.previous_state) if change.previous_state else ""
    arrow = f"{before} -> " if before else ""
    attempt = f" attempt {change.attempt}" if change.attempt else ""
    why = f"  {change.message}" if change.message else ""
    state = state_name(change.state)
    return f"{_time(change.change_time)}  v{change.version}  {arrow}{state}{attempt}{why}"


def _outcome_text(job: job_pb2.Job) -> str:
    lines = [f"job {job.job_id} ended {state_name(job.state)}"]
    if job.status_message:
        lines[0] += f": {job.status_message}"
    if job.attempts and job.attempts[-1].error_message:
        lines.append(f"  last attempt: {_attempt(job.attempts[-1])}")
    lines += [f"  step {_step(s)}" for s in job.result.steps]
    if job.result.outputs.fields:
        lines += [f"  output {k}: {json.dumps(v)}" for k, v in _values(job.result.outputs).items()]
    return "\n".join(lines)
