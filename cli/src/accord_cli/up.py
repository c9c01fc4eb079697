"""`accord up`: PostgreSQL, NATS and the four services as child processes, until Ctrl-C.

Uses ACCORD_DATABASE_URL / ACCORD_NATS_URL when set; otherwise starts an embedded
PostgreSQL and nats-server (from PyPI wheels) under the data directory, so data survives a
restart. Migrations run before the services start; every service is a separate process,
and one that dies is started again after a backoff (the kit's `Stack` does all of it).

Authentication is on: a dev signing key is kept under `<data-dir>/auth`, every service
gets its own token, and an admin token for tenant `default` is written there for you.
ACCORD_AUTH_DISABLED=true runs the stack without authentication instead.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from accord.common.v1 import job_spec_pb2
from accord.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from accord_cli.auth import dev_credentials
from accord_kit.auth import bearer
from accord_kit.config import redacted
from accord_kit.embedded import EmbeddedError
from accord_kit.stack import SERVICES, PortInUse, Stack, StackError


def register(commands: Any) -> None:
    cmd = commands.add_parser("up", help="run Accord locally: database, NATS, four services")
    cmd.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("ACCORD_DATA_DIR", ".accord")),
        help="where the embedded PostgreSQL and NATS keep their data (./.accord)",
    )
    cmd.add_argument("--postgres-port", type=int, default=54329)
    cmd.add_argument("--nats-port", type=int, default=4229)
    cmd.add_argument("--host", default="127.0.0.1", help="address the services listen on")
    cmd.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="added to every service port (gRPC 50051-50054, metrics 9451-9454)",
    )
    for service in ("orchestrator", "executor"):
        cmd.add_argument(
            f"--{service}s",
            type=int,
            default=1,
            metavar="N",
            help=f"{service} processes; replica r listens 10 r ports above the first",
        )
    cmd.set_defaults(run=run)


def webhook_key(data_dir: Path) -> str:
    """The key that seals webhook secrets, made once and kept (0600) with the data, so
    secrets stored by one run open in the next."""
    path = data_dir / "auth" / "webhook.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(base64.b64encode(os.urandom(32)).decode())
    return path.read_text().strip()


def fail(message: str) -> int:
    print(f"accord up: {message}", file=sys.stderr)
    return 1


def say(line: str) -> None:
    print(f"accord up: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    for name in SERVICES:
        env.setdefault(f"ACCORD_{name.upper()}_LOG_FORMAT", "console")
    admin = ""
    if env.get("ACCORD_AUTH_DISABLED", "").lower() not in ("1", "true", "yes"):
        dev = dev_credentials(args.data_dir.resolve())
        env |= dev.env
        admin = dev.admin_token
    if "ACCORD_ORCHESTRATOR_WEBHOOK_KEY" not in env:
        env["ACCORD_ORCHESTRATOR_WEBHOOK_KEY"] = webhook_key(args.data_dir.resolve())
    stack = Stack(
        args.data_dir,
        env=env,
        replicas={"orchestrator": args.orchestrators, "executor": args.executors},
        port_offset=args.port_offset,
        host=args.host,
        postgres_port=args.postgres_port,
        nats_port=args.nats_port,
        log_files=False,
        say=say,
    )
    try:
        with stack:
            _print_ready(stack)
            _print_engines(stack.target("executor"), admin)
            _print_try(args, stack.target("orchestrator"), bool(admin))
            while True:  # the supervisor restarts what dies; we wait for Ctrl-C
                time.sleep(3600)
    except PortInUse as exc:
        return fail(f"{exc}; stop what holds it or pass --port-offset")
    except (StackError, EmbeddedError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("\naccord up: stopped", file=sys.stderr)
    return 0


def _interrupt(*_: object) -> None:
    """SIGTERM stops `accord up` the same way Ctrl-C does."""
    raise KeyboardInterrupt


def _print_engines(executor: str, admin_token: str) -> None:
    """Say plainly which engines can run here, e.g. that no browser was found."""
    with grpc.insecure_channel(executor) as channel:
        status = executor_service_pb2_grpc.ExecutorServiceStub(channel).GetExecutorStatus(
            executor_service_pb2.GetExecutorStatusRequest(),
            metadata=bearer(admin_token) if admin_token else (),
            timeout=5,
        )
    for pool in status.pools:
        name = job_spec_pb2.Engine.Name(pool.engine).removeprefix("ENGINE_").lower()
        state = "ready" if pool.available else f"unavailable: {pool.unavailable_reason}"
        print(f"  engine {name:<7} {state}", flush=True)
        if not pool.available:
            print(
                f"  {name} jobs wait in QUEUED, saying so, until an executor that runs them polls",
                flush=True,
            )


def _print_ready(stack: Stack) -> None:
    host = stack.host
    lines = [
        f"  {i.name:<13} grpc {host}:{i.port}   metrics http://{host}:{i.metrics_port}/metrics"
        for i in stack.instances
    ]
    print("\nAccord is up.\n" + "\n".join(lines), flush=True)
    print(f"  postgres      {redacted(stack.env['ACCORD_DATABASE_URL'])}")
    print(f"  nats          {redacted(stack.env['ACCORD_NATS_URL'])}")


def _print_try(args: argparse.Namespace, target: str, auth: bool) -> None:
    if not auth:
        print("\nAuthentication is DISABLED (ACCORD_AUTH_DISABLED).", flush=True)
        print(f"Try: grpcurl -plaintext {target} list\nCtrl-C stops everything.\n", flush=True)
        return
    token = args.data_dir / "auth" / "admin.token"
    print(
        f"\nAn admin token for tenant `default` is in {token} (all scopes, 30 days).\n"
        f"Try:\n  export ACCORD_TOKEN=$(cat {token})\n"
        f'  grpcurl -plaintext -H "authorization: Bearer $ACCORD_TOKEN" \\\n'
        f"    -d '{{\"page_size\": 5}}' {target} accord.orchestrator.v1.JobService/ListJobs\n"
        "More tokens: accord auth issue-token --tenant T --scope jobs:read --ttl 1h\n"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
