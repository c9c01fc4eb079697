"""Small TCP helpers for launchers and tests: pick a free port, test one, wait for a listener."""

from __future__ import annotations

import errno
import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now; another process may still take it first."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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
