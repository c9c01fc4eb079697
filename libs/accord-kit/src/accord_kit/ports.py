"""The default ports of the four services, declared once for their settings and `accord up`.

gRPC on 50051-50054 and Prometheus metrics on 9451-9454, in the same order.
"""

from __future__ import annotations

from typing import NamedTuple


class Ports(NamedTuple):
    grpc: int
    metrics: int


DEFAULT_PORTS = {
    "orchestrator": Ports(50051, 9451),
    "policy": Ports(50052, 9452),
    "executor": Ports(50053, 9453),
    "audit": Ports(50054, 9454),
}


def default_target(service: str) -> str:
    """Where a service listens by default, as a gRPC target."""
    return f"127.0.0.1:{DEFAULT_PORTS[service].grpc}"
