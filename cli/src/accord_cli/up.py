"""`accord up`: PostgreSQL, NATS and the four services as child processes, until Ctrl-C.

Uses ACCORD_DATABASE_URL / ACCORD_NATS_URL when set; otherwise starts an embedded
PostgreSQL and nats-server (from PyPI wheels) under the data directory, so data survives a
restart. Migrations run before the services start; every service is a separate process.

Authentication is on: a dev signing key is kept under `<data-dir>/auth`, every service
gets its own token, and an admin token for tenant `default` is written there for you.
ACCORD_AUTH_DISABLED=true runs the stack without authentication instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord.common.v1 import job_spec_pb2
from accord.executor.v1 import executor_service_pb2, executor_service_pb2_grpc
from accord_cli.auth import dev_credentials
from accord_kit.auth import bearer
from accord_kit.config import redacted
from accord_kit.embedded import EmbeddedError, EmbeddedNats, EmbeddedPostgres
from accord_kit.net import port_in_use


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    metrics_port: int
    migrates: bool


SERVICES = (
    Service("policy", 50052, 9452, True),
    Service("orchestrator", 50051, 9451, True),
    Service("audit", 50054, 9454, True),
    Service("executor", 50053, 9453, False),
)


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
    cmd.set_defaults(run=run)


def fail(message: str) -> int:
    print(f"accord up: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    services = [
        Service(s.name, s.port + args.port_offset, s.metrics_port + args.port_offset, s.migrates)
        for s in SERVICES
    ]
    taken = [p for s in services for p in (s.port, s.metrics_port) if port_in_use(p, args.host)]
    if taken:
        return fail(
            f"port {', '.join(map(str, taken))} already in use; stop what holds it or "
            "pass --port-offset"
        )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            env = _dependencies(args, stack)
            for s in services:
                env |= _service_env(s, args.host, services)
            admin = ""
            if env.get("ACCORD_AUTH_DISABLED", "").lower() not in ("1", "true", "yes"):
                dev = dev_credentials(args.data_dir.resolve())
                env |= dev.env
                admin = dev.admin_token
            _migrate(services, env)
            children = [_spawn(s, env) for s in services]
            stack.callback(_stop_all, children)
            _wait_healthy(services, children, args.host)
            _print_ready(services, args.host, env)
            _print_engines(f"{args.host}:{services[3].port}", admin)
            _print_try(args, services[1].port, bool(admin))
            _supervise(children)
    except EmbeddedError as exc:
        return fail(str(exc))
    except ChildFailed as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("\naccord up: stopped", file=sys.stderr)
    return 0


class ChildFailed(Exception):
    """A child process failed to start or died; the message says which and why."""


def _interrupt(*_: object) -> None:
    """SIGTERM stops `accord up` the same way Ctrl-C does."""
    raise KeyboardInterrupt


def _dependencies(args: argparse.Namespace, stack: ExitStack) -> dict[str, str]:
    env = dict(os.environ)
    data = args.data_dir.resolve()
    if "ACCORD_DATABASE_URL" not in env:
        pg = stack.enter_context(EmbeddedPostgres(data / "postgres", args.postgres_port))
        env["ACCORD_DATABASE_URL"] = pg.url
    if "ACCORD_NATS_URL" not in env:
        nats = stack.enter_context(EmbeddedNats(data / "nats", args.nats_port))
        env["ACCORD_NATS_URL"] = nats.url
    return env


def _service_env(s: Service, host: str, services: list[Service]) -> dict[str, str]:
    prefix = f"ACCORD_{s.name.upper()}_"
    ports = {x.name: x.port for x in services}
    env = {
        f"{prefix}HOST": host,
        f"{prefix}PORT": str(s.port),
        f"{prefix}METRICS_PORT": str(s.metrics_port),
        f"{prefix}LOG_FORMAT": "console",
    }
    if s.name == "orchestrator":
        env[f"{prefix}POLICY_TARGET"] = f"{host}:{ports['policy']}"
    if s.name == "executor":
        env[f"{prefix}ORCHESTRATOR_TARGET"] = f"{host}:{ports['orchestrator']}"
        env[f"{prefix}POLICY_TARGET"] = f"{host}:{ports['policy']}"
    return env


def _migrate(services: list[Service], env: dict[str, str]) -> None:
    for s in services:
        if s.migrates:
            done = subprocess.run(
                [sys.executable, "-m", f"accord_{s.name}", "migrate"],
                env=env,
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise ChildFailed(f"{s.name} migrations failed:\n{done.stderr[-2000:]}")


def _spawn(s: Service, env: dict[str, str]) -> tuple[Service, subprocess.Popen[bytes]]:
    return s, subprocess.Popen([sys.executable, "-m", f"accord_{s.name}", "serve"], env=env)


def _wait_healthy(
    services: list[Service],
    children: list[tuple[Service, subprocess.Popen[bytes]]],
    host: str,
    timeout: float = 60,
) -> None:
    deadline = time.monotonic() + timeout
    for s in services:
        with grpc.insecure_channel(f"{host}:{s.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                _check_alive(children)
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise ChildFailed(f"{s.name} did not become healthy within {timeout:.0f}s")
                time.sleep(0.2)


def _check_alive(children: list[tuple[Service, subprocess.Popen[bytes]]]) -> None:
    for s, proc in children:
        if proc.poll() is not None:
            raise ChildFailed(f"{s.name} exited with code {proc.returncode}; see its log above")


def _supervise(children: list[tuple[Service, subprocess.Popen[bytes]]]) -> None:
    while True:
        _check_alive(children)
        time.sleep(0.5)


def _stop_all(children: list[tuple[Service, subprocess.Popen[bytes]]]) -> None:
    for _, proc in reversed(children):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for _, proc in reversed(children):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


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


def _print_ready(services: list[Service], host: str, env: dict[str, str]) -> None:
    lines = [
        f"  {s.name:<13} grpc {host}:{s.port}   metrics http://{host}:{s.metrics_port}/metrics"
        for s in services
    ]
    print("\nAccord is up.\n" + "\n".join(lines), flush=True)
    print(f"  postgres      {redacted(env['ACCORD_DATABASE_URL'])}")
    print(f"  nats          {redacted(env['ACCORD_NATS_URL'])}")


def _print_try(args: argparse.Namespace, orchestrator_port: int, auth: bool) -> None:
    target = f"{args.host}:{orchestrator_port}"
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
