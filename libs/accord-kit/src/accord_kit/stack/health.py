"""Waiting for service processes to report SERVING on grpc.health.v1, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accord_kit.stack.supervisor import StackError

SERVING = health_pb2.HealthCheckResponse.SERVING
POLL_SECONDS = 0.2


def serving(channel: grpc.Channel) -> bool:
    """True when the server's overall health is SERVING now."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
    except grpc.RpcError:
        return False
    return bool(reply.status == SERVING)


def wait_serving(
    targets: Sequence[tuple[str, str]], timeout: float, check: Callable[[], None]
) -> None:
    """Poll (name, target) pairs until each is SERVING; `check` raises to give up early.

    StackError names the ones still not serving when `timeout` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    waiting = dict(targets)
    channels = {name: grpc.insecure_channel(target) for name, target in waiting.items()}
    try:
        while waiting:
            check()
            for name in [n for n in waiting if serving(channels[n])]:
                del waiting[name]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StackError(f"{', '.join(waiting)} not SERVING within {timeout:g}s")
            time.sleep(POLL_SECONDS)
    finally:
        for channel in channels.values():
            channel.close()
