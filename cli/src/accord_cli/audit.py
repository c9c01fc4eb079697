"""`accord audit`: read the tenant's audit log, export it with proofs, and verify an export
offline.

    accord audit list [--type PREFIX] [--aggregate ID]    a table; --json for the API's JSON
    accord audit get INDEX|EVENT_ID
    accord audit tail [--from INDEX]                      follows new records until interrupted
    accord audit checkpoint [--size N] [--json]           the latest (or a stored) checkpoint
    accord audit keys [--json]                            the keys that sign checkpoints
    accord audit export FILE [--start I] [--end J] [--since CHECKPOINT.json]
    accord audit verify FILE --key KEYS.json [--since CHECKPOINT.json]    offline, no server

Address, token, TLS and profile options are every group's (`accord_cli.connect`). Exit codes,
as every group's: 0 done (or verified), 1 verification failed, 2 bad usage or input, 3 not
found or past the end of the log, 4 the service failed or could not be reached.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from accord.audit.v2 import audit_service_pb2 as pb
from accord.audit.v2 import audit_service_pb2_grpc, record_pb2
from accord_cli import audit_verify, output
from accord_cli.connect import add_connection_options, resolve
from accord_kit import auth

INVALID, FAILED = output.FAILED, output.UNAVAILABLE  # a failed verification; a failed call
OK, USAGE, MISSING = output.OK, output.USAGE, output.MISSING
_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: USAGE,
    grpc.StatusCode.NOT_FOUND: MISSING,
    grpc.StatusCode.FAILED_PRECONDITION: MISSING,
}


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="audit log: read, export, verify offline")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    def command(name: str, help_: str, run: Any, online: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_)
        if online:
            add_connection_options(parser, ("audit",))
            parser.add_argument("--tenant", default="", help="tenant, with a service token")
        parser.add_argument("--json", action="store_true", help="print the API's JSON")
        parser.set_defaults(run=run)
        return parser

    listing = command("list", "list the tenant's records", run_list)
    listing.add_argument("--page-size", type=int, default=100)
    listing.add_argument("--page-token", default="")
    listing.add_argument("--type", default="", help="event type prefix")
    listing.add_argument("--aggregate", default="", help="aggregate id")
    command("get", "show one record by index or event id", run_get).add_argument("key")
    tail = command("tail", "print records as they are appended", run_tail)
    tail.add_argument("--from", dest="from_index", type=int, default=0)
    command("checkpoint", "the latest signed checkpoint", run_checkpoint).add_argument(
        "--size", type=int, default=0, help="a stored checkpoint of this tree size"
    )
    command("keys", "the public keys that sign checkpoints", run_keys)
    export = command("export", "write records with proofs to FILE", run_export)
    export.add_argument("file", type=Path)
    export.add_argument("--start", type=int, default=0, help="first index")
    export.add_argument("--end", type=int, default=0, help="index after the last; 0: all")
    export.add_argument("--since", type=Path, help="an earlier checkpoint to prove it extends")
    verify = command("verify", "check an export offline", run_verify, online=False)
    verify.add_argument("file", type=Path)
    verify.add_argument("--key", type=Path, required=True, help="`accord audit keys --json`")
    verify.add_argument("--since", type=Path, help="an earlier checkpoint (JSON)")


class _Failed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _metadata(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    metadata = resolve(args).metadata()
    if args.tenant:
        metadata += ((auth.TENANT_METADATA, args.tenant),)
    return metadata


def _failed(exc: grpc.RpcError) -> _Failed:
    code = exc.code()
    return _Failed(_CODES.get(code, FAILED), f"{code.name}: {exc.details()}")


def _call(args: argparse.Namespace, method: str, request: Message) -> Any:
    with resolve(args).channel("audit") as channel:
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        try:
            return getattr(stub, method)(
                request, metadata=_metadata(args), timeout=resolve(args).timeout
            )
        except grpc.RpcError as exc:
            raise _failed(exc) from None


def _stream(args: argparse.Namespace, method: str, request: Message) -> Iterator[Any]:
    with resolve(args).channel("audit") as channel:
        stub = audit_service_pb2_grpc.AuditServiceStub(channel)
        try:
            yield from getattr(stub, method)(request, metadata=_metadata(args))
        except grpc.RpcError as exc:
            raise _failed(exc) from None


def _run(body: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(body(args))
        except _Failed as exc:
            print(f"accord audit: {exc}", file=sys.stderr)
            return exc.code
        except (OSError, ValueError, json_format.ParseError) as exc:
            print(f"accord audit: {exc}", file=sys.stderr)
            return USAGE

    return run


def _json(message: Message) -> str:
    return json_format.MessageToJson(message, indent=None)


def _row(r: record_pb2.AuditRecord) -> str:
    when = r.event_time.ToDatetime().isoformat(timespec="seconds")
    erased = "  (erased)" if r.HasField("erase_time") else ""
    return f"{r.index:>8}  {when}Z  {r.event_type}  {r.aggregate_id or '-'}{erased}"


def _record_text(r: record_pb2.AuditRecord) -> str:
    return "\n".join(
        [
            f"index:      {r.index}",
            f"event id:   {r.event_id}",
            f"type:       {r.event_type}",
            f"aggregate:  {r.aggregate_type} {r.aggregate_id or '-'}",
            f"event time: {r.event_time.ToDatetime().isoformat()}Z",
            f"actor:      {r.actor or '-'}",
            f"hash:       {r.hash.hex()}",
            f"prev hash:  {r.prev_hash.hex()}",
            *(
                [f"erased:     {r.erase_time.ToDatetime().isoformat()}Z"]
                if r.HasField("erase_time")
                else []
            ),
        ]
    )


def _checkpoint_text(cp: record_pb2.Checkpoint) -> str:
    return "\n".join(
        [
            f"log:        {cp.log_id}",
            f"tree size:  {cp.tree_size}",
            f"root hash:  {cp.root_hash.hex()}",
            f"time:       {cp.checkpoint_time.ToDatetime().isoformat()}Z",
            f"key id:     {cp.key_id}",
        ]
    )


@_run
def run_list(args: argparse.Namespace) -> int:
    request = pb.ListRecordsRequest(
        page_size=args.page_size,
        page_token=args.page_token,
        event_type_prefix=args.type,
        aggregate_id=args.aggregate,
    )
    response = _call(args, "ListRecords", request)
    lines = [_row(r) for r in response.records]
    if response.next_page_token:
        lines.append(f"more: --page-token {response.next_page_token}")
    print(_json(response) if args.json else "\n".join(lines))
    return OK


@_run
def run_get(args: argparse.Namespace) -> int:
    key = args.key
    request = (
        pb.GetRecordRequest(index=int(key)) if key.isdigit() else pb.GetRecordRequest(event_id=key)
    )
    record = _call(args, "GetRecord", request).record
    print(_json(record) if args.json else _record_text(record))
    return OK


@_run
def run_tail(args: argparse.Namespace) -> int:
    request = pb.StreamRecordsRequest(from_index=args.from_index)
    try:
        for item in _stream(args, "StreamRecords", request):
            print(_json(item.record) if args.json else _row(item.record), flush=True)
    except KeyboardInterrupt:
        pass
    return OK


@_run
def run_checkpoint(args: argparse.Namespace) -> int:
    cp = _call(args, "GetCheckpoint", pb.GetCheckpointRequest(tree_size=args.size)).checkpoint
    print(_json(cp) if args.json else _checkpoint_text(cp))
    return OK


@_run
def run_keys(args: argparse.Namespace) -> int:
    response = _call(args, "GetCheckpointKeys", pb.GetCheckpointKeysRequest())
    text = "\n".join(f"{k.key_id}  {k.public_key.hex()}" for k in response.keys)
    print(_json(response) if args.json else text)
    return OK


@_run
def run_export(args: argparse.Namespace) -> int:
    since = audit_verify.read_checkpoint(args.since).tree_size if args.since else 0
    request = pb.ExportRecordsRequest(
        start_index=args.start, end_index=args.end, consistency_from_size=since
    )
    count = 0
    with args.file.open("w") as out:
        for item in _stream(args, "ExportRecords", request):
            out.write(_json(item) + "\n")
            count += item.WhichOneof("item") == "record"
    print(f"exported {count} records to {args.file}", file=sys.stderr)
    return OK


@_run
def run_verify(args: argparse.Namespace) -> int:
    items = audit_verify.read_export(args.file)
    keys = audit_verify.read_keys(args.key)
    since = audit_verify.read_checkpoint(args.since) if args.since else None
    report = audit_verify.verify(items, keys, since)
    for failure in report.failures:
        print(f"FAILED: {failure}")
    cp = report.checkpoint
    if report.ok and cp is not None:
        erased = f"; payload erased by retention: {_ranges(report.erased)}" if report.erased else ""
        extends = f"; extends the checkpoint of size {since.tree_size}" if since else ""
        print(
            f"verified {report.checked} records of {cp.log_id} against its checkpoint of size "
            f"{cp.tree_size} (root {cp.root_hash.hex()}, key {cp.key_id}){extends}{erased}"
        )
    return OK if report.ok else INVALID


def _ranges(indexes: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out: list[str] = []
    start = prev = indexes[0]
    for i in [*indexes[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(out)
