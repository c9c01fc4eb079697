"""Service processes kept running: one that dies is started again after a backoff.

What compose's `restart: unless-stopped` does in production: the delay doubles with each
death (half of it random, capped), and a process that stayed up a while starts over from
the first delay. A process stopped on purpose stays stopped.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from accord_kit.backoff import Backoff

Say = Callable[[str], None]


class StackError(Exception):
    """A stack could not start, or a process in it failed; the message says which and why."""


@dataclass(frozen=True)
class RestartPolicy:
    """Seconds: first delay, longest delay, and uptime after which a death counts as the first."""

    initial: float = 0.5
    maximum: float = 30.0
    stable_after: float = 30.0


def describe_exit(code: int) -> str:
    """`code -9 (SIGKILL)`: a negative code is the signal that ended the process."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"code {code} ({signal.Signals(-code).name})"
    return f"code {code}"


class Child:
    """One service process: started, watched, restarted when it dies, stopped on request."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log: Path | None, say: Say
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.deaths = 0
        """Times it exited without being asked to."""
        self._say = say
        self._lock = threading.Lock()
        self._supervised = False
        self._backoff = Backoff()
        self._policy = RestartPolicy()
        self._started = 0.0
        self._due: float | None = None  # when a dead process is started again

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with self._lock:
            self._spawn()

    def supervise(self, policy: RestartPolicy) -> None:
        """From now on, restart the process whenever it dies."""
        with self._lock:
            self._policy = policy
            self._backoff = Backoff(initial=policy.initial, maximum=policy.maximum)
            self._supervised = True

    def check(self, now: float) -> None:
        """One supervision step: notice a death, or start again once its delay is over."""
        with self._lock:
            if not self._supervised or self.proc is None:
                return
            if self._due is None:
                code = self.proc.poll()
                if code is None:
                    return
                self.deaths += 1
                if now - self._started >= self._policy.stable_after:
                    self._backoff.reset()
                delay = self._backoff.next()
                self._due = now + delay
                exited = describe_exit(code)
                self._say(f"{self.name} exited with {exited}; restarting in {delay:.1f}s")
            elif now >= self._due:
                self._spawn()
                assert self.proc is not None
                self._say(f"{self.name} restarted (pid {self.proc.pid})")

    def send(self, sig: signal.Signals) -> int:
        """Signal the running process; returns its pid."""
        with self._lock:
            if self.proc is None or self.proc.poll() is not None:
                raise StackError(f"{self.name} is not running")
            self.proc.send_signal(sig)
            return self.proc.pid

    def _spawn(self) -> None:
        with contextlib.ExitStack() as files:
            out = files.enter_context(self.log.open("ab")) if self.log else None
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                # Own session: Ctrl-C reaches the launcher only, which stops them in order.
                start_new_session=True,
            )
        self._started = time.monotonic()
        self._due = None

    def stop_supervising(self) -> subprocess.Popen[bytes] | None:
        """No more restarts; returns the process, if any, for the caller to stop."""
        with self._lock:
            self._supervised = False
            self._due = None
            return self.proc


def stop_all(children: Iterable[Child], timeout: float) -> None:
    """Stop supervising, SIGTERM every live process, and SIGKILL those that outlive `timeout`."""
    procs = [p for c in children if (p := c.stop_supervising()) is not None and p.poll() is None]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Supervisor:
    """A daemon thread that runs every child's supervision step a few times a second."""

    def __init__(self, children: Iterable[Child], interval: float = 0.1) -> None:
        self._children = list(children)
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accord-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            now = time.monotonic()
            for child in self._children:
                child.check(now)
