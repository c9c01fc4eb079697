"""Small TCP helpers for launchers and tests: pick a free port, test one, wait for a listener."""

from __future__ import annotations

import errno
import random
import socket
import time
from pathlib import Path

# Ports this process has handed out, so that no two of its picks are ever the same.
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now, outside the kernel's ephemeral range and never handed out
    before by this process. Outgoing connections take their source ports from the ephemeral
    range, so a port picked there (as binding port 0 does) can be taken by one of them before
    the server meant for it binds; another process may still take this one first."""
    low, high = _ephemeral_range()
    candidates = range(15000, low) if low > 16000 else range(high + 1, 65536)
    for _ in range(200):
        port = random.choice(candidates)  # noqa: S311 - spreading picks, not secrets
        if port in _handed_out or port_in_use(port, host):
            continue
        _handed_out.add(port)
        return port
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:  # all taken: let the OS pick
        sock.bind((host, 0))
        picked: int = sock.getsockname()[1]
        return picked


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on host:port (a server could not bind it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so leftover TIME_WAIT connections do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def accepts_connections(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Poll until host:port accepts a TCP connection; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not accepts_connections(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:g}s")
        time.sleep(0.05)


def _family(host: str) -> socket.AddressFamily:
    return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][0]
