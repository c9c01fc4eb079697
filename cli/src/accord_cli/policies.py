"""`accord policies`: read and change a tenant's policies, and ask what they decide.

    accord policies list                              a table; --json for the API's JSON
    accord policies get POLICY_ID
    accord policies create web --allow example.com --allow '*.example.com' --network 10.0.0.0/8
    accord policies update POLICY_ID --allow example.org     (replaces that field only)
    accord policies delete POLICY_ID
    accord policies evaluate spec.yaml                       a JobSpec, JSON or YAML; a dry run
    accord policies check-url https://example.com/ --mode public

Address, token, TLS and profile options and the exit codes are every group's (see
`accord_cli.connect` and `accord_cli.output`): 0 done (or allowed), 1 denied by policy,
2 bad usage or input, 3 not found or stale etag, 4 the service failed or was unreachable.
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message

from accord.common.v1 import decision_pb2, job_spec_pb2
from accord.policy.v1 import policy_pb2, policy_service_pb2_grpc
from accord.policy.v1 import policy_service_pb2 as pb
from accord_cli import output
from accord_cli.connect import add_connection_options, resolve
from accord_cli.output import Exit, Printer, add_output_options, table
from accord_cli.specs import read_spec

# The shared exit codes (accord_cli.output), by the names this group has always used.
OK, DENIED, USAGE, MISSING, FAILED = (
    output.OK,
    output.FAILED,
    output.USAGE,
    output.MISSING,
    output.UNAVAILABLE,
)
MODES = {
    m.removeprefix("AUTHORIZATION_MODE_").lower().replace("_", "-"): v
    for m, v in job_spec_pb2.AuthorizationMode.items()
    if v
}
ENGINES = {e.removeprefix("ENGINE_").lower(): v for e, v in job_spec_pb2.Engine.items() if v}


def register(commands: Any) -> None:
    policies = commands.add_parser("policies", help="policies: list, change, evaluate")
    sub = policies.add_subparsers(dest="policies_command", required=True)

    def command(name: str, help_: str, run: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        add_connection_options(parser, ("policy",))
        add_output_options(parser)
        parser.set_defaults(run=run)
        return parser

    listing = command("list", "list the tenant's policies", run_list)
    listing.add_argument("--page-size", type=int, default=100)
    command("get", "show one policy", run_get).add_argument("policy_id")
    create = command("create", "create a policy", run_create)
    create.add_argument("name")
    create.add_argument("--request-id", default=None, help="idempotency key (default: random)")
    _rule_flags(create)
    update = command("update", "change the named fields of a policy", run_update)
    update.add_argument("policy_id")
    update.add_argument("--name", default=None, help="new display name")
    update.add_argument("--etag", default=None, help="expected etag (default: the current one)")
    _rule_flags(update)
    delete = command("delete", "delete a policy", run_delete)
    delete.add_argument("policy_id")
    delete.add_argument("--etag", default="", help="expected etag (default: any)")
    evaluate = command("evaluate", "decide a job spec (JSON/YAML file, - for stdin)", run_evaluate)
    evaluate.add_argument("spec", help="JobSpec as JSON or YAML")
    evaluate.add_argument("--binding", action="store_true", help="record it (not a dry run)")
    check = command("check-url", "decide one URL as a request of a job", run_check_url)
    check.add_argument("url")
    check.add_argument("--engine", choices=sorted(ENGINES), default="http")
    check.add_argument("--mode", choices=sorted(MODES), default="public")


def _rule_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow", action="append", help="allowed domain pattern (repeat)")
    parser.add_argument("--deny", action="append", help="denied domain pattern (repeat)")
    parser.add_argument("--network", action="append", help="allowed network, CIDR (repeat)")
    parser.add_argument("--max-mode", choices=sorted(MODES), help="highest authorization mode")
    parser.add_argument("--rules", help="the whole PolicyRules as JSON, or @file")


def _rules(args: argparse.Namespace) -> tuple[policy_pb2.PolicyRules, list[str]]:
    """The rules the flags give, and the `rules.<field>` paths they set."""
    rules = policy_pb2.PolicyRules()
    paths: list[str] = []
    if args.rules:
        text = Path(args.rules[1:]).read_text() if args.rules.startswith("@") else args.rules
        json_format.Parse(text, rules)
        paths.append("rules")
    for flag, name in (
        ("allow", "allowed_domains"),
        ("deny", "denied_domains"),
        ("network", "allowed_networks"),
    ):
        values = getattr(args, flag)
        if values is not None:
            getattr(rules, name)[:] = values
            paths.append(f"rules.{name}")
    if args.max_mode:
        rules.max_authorization_mode = MODES[args.max_mode]
        paths.append("rules.max_authorization_mode")
    return rules, paths


def _call(args: argparse.Namespace, method: str, request: Message) -> Any:
    conn = resolve(args)
    with conn.channel("policy") as channel:
        stub = policy_service_pb2_grpc.PolicyServiceStub(channel)
        return getattr(stub, method)(request, metadata=conn.metadata(), timeout=conn.timeout)


_run = output.command("policies")


def _policy_text(p: policy_pb2.Policy) -> str:
    rules = json_format.MessageToDict(p.rules)
    lines = [
        f"id:        {p.policy_id}",
        f"name:      {p.display_name}",
        f"revision:  {p.revision}",
        f"etag:      {p.etag}",
        f"updated:   {p.update_time.ToDatetime().isoformat()}Z",
        "rules:",
        *(f"  {k}: {json.dumps(v)}" for k, v in rules.items()),
    ]
    return "\n".join(lines)


def _decision_text(d: decision_pb2.PolicyDecision, extra: str = "") -> str:
    outcome = decision_pb2.DecisionOutcome.Name(d.outcome).removeprefix("DECISION_OUTCOME_")
    lines = [f"{outcome} (revision {d.policy_revision}, decision {d.decision_id}){extra}"]
    lines += [f"  {r.code}: {r.message}" for r in d.reasons]
    return "\n".join(lines)


def _outcome(d: decision_pb2.PolicyDecision) -> int:
    return OK if d.outcome == decision_pb2.DECISION_OUTCOME_ALLOW else DENIED


@_run
def run_list(args: argparse.Namespace, out: Printer) -> int:
    response = _call(args, "ListPolicies", pb.ListPoliciesRequest(page_size=args.page_size))
    rows = [
        (
            p.policy_id,
            p.display_name,
            str(p.revision),
            ",".join(p.rules.allowed_domains) or "-",
            ",".join(p.rules.allowed_networks) or "-",
        )
        for p in response.policies
    ]
    header = ("ID", "NAME", "REVISION", "ALLOWED DOMAINS", "NETWORKS")
    out.emit(response, lambda: table(header, rows))
    return OK


@_run
def run_get(args: argparse.Namespace, out: Printer) -> int:
    policy = _call(args, "GetPolicy", pb.GetPolicyRequest(policy_id=args.policy_id)).policy
    out.emit(policy, _policy_text(policy))
    return OK


@_run
def run_create(args: argparse.Namespace, out: Printer) -> int:
    rules, _ = _rules(args)
    request = pb.CreatePolicyRequest(
        request_id=args.request_id or uuid.uuid4().hex,
        policy=policy_pb2.Policy(display_name=args.name, rules=rules),
    )
    policy = _call(args, "CreatePolicy", request).policy
    out.emit(policy, _policy_text(policy))
    return OK


@_run
def run_update(args: argparse.Namespace, out: Printer) -> int:
    rules, paths = _rules(args)
    if args.name is not None:
        paths.append("display_name")
    if not paths:
        raise Exit(
            USAGE,
            "nothing to change: give --name, --allow, --deny, --network, --max-mode or --rules",
        )
    etag = args.etag
    if etag is None:
        etag = _call(args, "GetPolicy", pb.GetPolicyRequest(policy_id=args.policy_id)).policy.etag
    policy = policy_pb2.Policy(
        policy_id=args.policy_id, etag=etag, display_name=args.name or "", rules=rules
    )
    request = pb.UpdatePolicyRequest(
        policy=policy, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    updated = _call(args, "UpdatePolicy", request).policy
    out.emit(updated, _policy_text(updated))
    return OK


@_run
def run_delete(args: argparse.Namespace, out: Printer) -> int:
    response = _call(
        args, "DeletePolicy", pb.DeletePolicyRequest(policy_id=args.policy_id, etag=args.etag)
    )
    out.emit(response, f"deleted {args.policy_id}")
    return OK


@_run
def run_evaluate(args: argparse.Namespace, out: Printer) -> int:
    request = pb.EvaluateJobRequest(spec=read_spec(args.spec), dry_run=not args.binding)
    decision = _call(args, "EvaluateJob", request).decision
    out.emit(decision, _decision_text(decision))
    return _outcome(decision)


@_run
def run_check_url(args: argparse.Namespace, out: Printer) -> int:
    request = pb.CheckUrlRequest(
        url=args.url, engine=ENGINES[args.engine], authorization_mode=MODES[args.mode]
    )
    response = _call(args, "CheckUrl", request)
    where = f", addresses {', '.join(response.addresses)}" if response.addresses else ""
    out.emit(response, _decision_text(response.decision, where))
    return _outcome(response.decision)
