"""The whole stack on one machine: PostgreSQL, NATS, migrations and every service process.

`accord up`, the benchmarks and the end-to-end tests all run Accord through `Stack`. It
starts an embedded PostgreSQL and nats-server under its work directory unless the
environment gives ACCORD_DATABASE_URL / ACCORD_NATS_URL, migrates, starts each service as
`python -m accord_<svc>` with its ports and targets in env, waits until all are SERVING,
and from then on restarts any that dies. Tests break it on purpose through its chaos
controls. Every method blocks; from async code call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from accord_kit.embedded import EmbeddedNats, EmbeddedPostgres
from accord_kit.net import free_port, port_in_use
from accord_kit.stack import health
from accord_kit.stack.plan import (
    MIGRATING,
    Instance,
    fixed_ports,
    instance_env,
    layout,
)
from accord_kit.stack.supervisor import (
    Child,
    RestartPolicy,
    Say,
    StackError,
    Supervisor,
    describe_exit,
    stop_all,
)

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
MIGRATE_TIMEOUT = 120.0


class PortInUse(StackError):
    """A port the stack was told to use is taken; the message names it."""


def say_on_stderr(line: str) -> None:
    print(f"accord: {line}", file=sys.stderr, flush=True)


class Stack:
    """A running Accord: where each process listens, the environment they share, their logs.

    `replicas` maps a service to its process count (default 1 each). `port_offset` picks
    the default ports moved by that much (replica r a further 10 r up); None picks free
    ports. With `log_files` each process writes `<workdir>/<name>.log`; without, it
    writes to this process's terminal. `say` receives the supervisor's lines.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str],
        replicas: Mapping[str, int] | None = None,
        port_offset: int | None = None,
        host: str = LOCALHOST,
        postgres_port: int | None = None,
        nats_port: int | None = None,
        log_files: bool = True,
        restart: RestartPolicy | None = None,
        say: Say = say_on_stderr,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.env = dict(env)
        # One key for every replica, so a list pages across them.
        self.env.setdefault("ACCORD_PAGE_TOKEN_KEY", secrets.token_urlsafe(32))
        self.host = host
        pick = fixed_ports(port_offset) if port_offset is not None else self._free_ports
        self.instances = layout(replicas or {}, pick)
        names = [i.name for i in self.instances] if log_files else []
        self.logs = {name: self.workdir / f"{name}.log" for name in names}
        self.events: list[str] = []
        """Every line the supervisor said: deaths, delays, restarts."""
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self._fixed_ports = port_offset is not None
        self._postgres_port = postgres_port
        self._nats_port = nats_port
        self._restart = restart or RestartPolicy()
        self._say = say
        self._children: dict[str, Child] = {}
        self._supervisor: Supervisor | None = None

    def _free_ports(self, service: str, replica: int) -> tuple[int, int]:
        return free_port(self.host), free_port(self.host)

    # Where things are.

    def instance(self, service: str, replica: int = 0) -> Instance:
        for i in self.instances:
            if (i.service, i.replica) == (service, replica):
                return i
        raise KeyError(f"{service} has no replica {replica}")

    def target(self, service: str, replica: int = 0) -> str:
        return f"{self.host}:{self.instance(service, replica).port}"

    def targets(self, service: str) -> list[str]:
        return [f"{self.host}:{i.port}" for i in self.instances if i.service == service]

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The current process of each instance, by name: `executor`, or `executor-0`..."""
        return {name: c.proc for name, c in self._children.items() if c.proc is not None}

    def deaths(self, service: str, replica: int = 0) -> int:
        """How often this instance exited without being asked to."""
        return self._child(service, replica).deaths

    def check_alive(self) -> None:
        """Raise StackError if any process died since the start (even if it came back)."""
        for name, child in self._children.items():
            if child.deaths or not child.alive:
                raise StackError(f"{name} died {child.deaths} times:\n{self.tail(name)}")

    def tail(self, name: str, chars: int = 3000) -> str:
        """The end of an instance's log, for error messages."""
        if name not in self.logs:
            return "(its log went to the terminal above)"
        try:
            return self.logs[name].read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # Start and stop.

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """`async with stack.running()`: start and stop off the event loop, which keeps going."""
        starting = asyncio.ensure_future(asyncio.to_thread(self.start))
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The thread carries on starting; whatever it started is stopped once it returns.
            with contextlib.suppress(Exception):
                await starting
            await asyncio.to_thread(self.stop)
            raise
        try:
            yield self
        finally:
            await asyncio.to_thread(self.stop)

    def start(self) -> None:
        """Start everything and return once every process is SERVING; supervise from then on."""
        try:
            self._check_ports()
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._start_dependencies()
            self._migrate()
            self._children = {i.name: self._child_for(i) for i in self.instances}
            for child in self._children.values():
                child.start()
            self._wait([*self._children], fail_on_exit=True)
            for child in self._children.values():
                child.supervise(self._restart)
            self._supervisor = Supervisor(self._children.values())
            self._supervisor.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process (executors first, so they can report), then NATS and Postgres."""
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        children = self._children.values()
        executor = {i.name for i in self.instances if i.service == "executor"}
        stop_all([c for c in children if c.name in executor], STOP_TIMEOUT)
        stop_all(children, STOP_TIMEOUT)
        for server in (self.nats, self.postgres):
            if server is not None:
                server.stop()

    def _check_ports(self) -> None:
        if not self._fixed_ports:
            return
        ports = [p for i in self.instances for p in (i.port, i.metrics_port)]
        taken = [str(p) for p in ports if port_in_use(p, self.host)]
        if taken:
            raise PortInUse(f"port {', '.join(taken)} already in use")

    def _start_dependencies(self) -> None:
        starting: list[EmbeddedPostgres | EmbeddedNats] = []
        if "ACCORD_DATABASE_URL" not in self.env:
            port = self._postgres_port or free_port(LOCALHOST)
            self.postgres = EmbeddedPostgres(self.workdir / "postgres", port)
            starting.append(self.postgres)
        if "ACCORD_NATS_URL" not in self.env:
            self.nats = EmbeddedNats(self.workdir / "nats", self._nats_port or free_port(LOCALHOST))
            starting.append(self.nats)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(server.start) for server in starting]:
                done.result()
        if self.postgres is not None:
            self.env["ACCORD_DATABASE_URL"] = self.postgres.url
        if self.nats is not None:
            self.env["ACCORD_NATS_URL"] = self.nats.url

    def _migrate(self) -> None:
        """Every service's migrations at once: each owns its schema, so they cannot clash."""
        runs = []
        for name in MIGRATING:
            output = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the wait
            argv = [sys.executable, "-m", f"accord_{name}", "migrate"]
            proc = subprocess.Popen(argv, env=self.env, stdout=output, stderr=subprocess.STDOUT)
            runs.append((name, proc, output))
        failed = []
        for name, proc, output in runs:
            try:
                code = proc.wait(MIGRATE_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            output.seek(0)
            text = output.read().decode(errors="replace")
            output.close()
            if code != 0:
                failed.append(f"{name} migrations failed ({describe_exit(code)}):\n{text[-3000:]}")
        if failed:
            raise StackError("\n".join(failed))

    def _child_for(self, instance: Instance) -> Child:
        env = self.env | instance_env(instance, self.instances, self.host)
        argv = [sys.executable, "-m", f"accord_{instance.service}"]
        return Child(instance.name, argv, env, self.logs.get(instance.name), self._said)

    def _said(self, line: str) -> None:
        self.events.append(line)
        self._say(line)

    def _wait(
        self, names: list[str], *, fail_on_exit: bool, timeout: float = START_TIMEOUT
    ) -> None:
        def check() -> None:
            for name in names:
                proc = self._children[name].proc
                if fail_on_exit and proc is not None and proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with {describe_exit(proc.returncode)}:\n{self.tail(name)}"
                    )

        targets = [(n, f"{self.host}:{self._instance_named(n).port}") for n in names]
        health.wait_serving(targets, timeout, check)

    def _instance_named(self, name: str) -> Instance:
        return next(i for i in self.instances if i.name == name)

    def _child(self, service: str, replica: int) -> Child:
        return self._children[self.instance(service, replica).name]

    # Control: what the benchmarks and the chaos tests do to a running stack.

    def wait_serving(
        self, service: str | None = None, replica: int | None = None, timeout: float = START_TIMEOUT
    ) -> None:
        """Wait until the given instances (default: all) are SERVING, restarts included."""
        names = [
            i.name
            for i in self.instances
            if service in (None, i.service) and replica in (None, i.replica)
        ]
        self._wait(names, fail_on_exit=False, timeout=timeout)

    def kill(self, service: str, replica: int = 0, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal one process (SIGKILL by default); the supervisor restarts it. Returns its pid."""
        return self._child(service, replica).send(sig)

    def stop_service(self, service: str, replica: int = 0) -> None:
        """Stop one process on purpose (SIGTERM, then SIGKILL): it stays down."""
        stop_all([self._child(service, replica)], STOP_TIMEOUT)

    def start_service(self, service: str, replica: int = 0) -> None:
        """Start a stopped process again on its ports, wait until SERVING, supervise it."""
        child = self._child(service, replica)
        child.start()
        self._wait([child.name], fail_on_exit=True)
        child.supervise(self._restart)

    def pause_nats(self) -> None:
        """SIGSTOP the embedded nats-server: connections stay open and nothing answers."""
        self._embedded_nats().pause()

    def resume_nats(self) -> None:
        self._embedded_nats().resume()

    def restart_nats(self) -> None:
        """Stop and start nats-server on the same port and JetStream store: streams survive."""
        self._embedded_nats().restart()

    def restart_postgres(self) -> None:
        """Stop (fast shutdown) and start PostgreSQL on the same port and data directory."""
        if self.postgres is None:
            raise StackError("PostgreSQL was given by ACCORD_DATABASE_URL; it is not ours")
        self.postgres.restart()

    def _embedded_nats(self) -> EmbeddedNats:
        if self.nats is None:
            raise StackError("NATS was given by ACCORD_NATS_URL; it is not ours")
        return self.nats
