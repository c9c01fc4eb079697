"""Which service processes a stack runs, on which ports, and the environment each one gets.

Pure: no processes here. Replica r of a service is one process with its own gRPC port,
metrics port and name (`executor` when there is one, `executor-0`, `executor-1`... when
there are several). Callers of another service are spread over its replicas round-robin:
executor r talks to orchestrator r mod n and to policy r mod m, and so do orchestrators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from accord_kit.ports import DEFAULT_PORTS

# Start order: what is called before its callers; stopped in reverse.
SERVICES = ("policy", "orchestrator", "audit", "executor")
MIGRATING = ("policy", "orchestrator", "audit")
# With fixed ports, replica r listens on the default port + offset + r * REPLICA_STRIDE:
# the stride keeps every replica's last digit, so no service takes another's port.
REPLICA_STRIDE = 10
MAX_REPLICAS = 9


@dataclass(frozen=True)
class Instance:
    """One process of one service."""

    service: str
    replica: int
    name: str
    port: int
    metrics_port: int

    @property
    def prefix(self) -> str:
        return f"ACCORD_{self.service.upper()}_"


PortPicker = Callable[[str, int], tuple[int, int]]


def fixed_ports(offset: int) -> PortPicker:
    """The default ports moved by `offset`, replicas a stride apart."""

    def pick(service: str, replica: int) -> tuple[int, int]:
        shift = offset + replica * REPLICA_STRIDE
        default = DEFAULT_PORTS[service]
        return default.grpc + shift, default.metrics + shift

    return pick


def layout(replicas: Mapping[str, int], pick: PortPicker) -> list[Instance]:
    """Every instance, in start order; each service runs at least one."""
    unknown = set(replicas) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service {', '.join(sorted(unknown))}; known: {SERVICES}")
    instances = []
    for service in SERVICES:
        count = replicas.get(service, 1)
        if not 1 <= count <= MAX_REPLICAS:
            raise ValueError(f"{service} replicas must be 1 to {MAX_REPLICAS}, not {count}")
        for replica in range(count):
            name = service if count == 1 else f"{service}-{replica}"
            instances.append(Instance(service, replica, name, *pick(service, replica)))
    return instances


def instance_env(instance: Instance, instances: list[Instance], host: str) -> dict[str, str]:
    """What one process needs on top of the shared environment: where it listens and calls."""
    p = instance.prefix
    env = {
        f"{p}HOST": host,
        f"{p}PORT": str(instance.port),
        f"{p}METRICS_PORT": str(instance.metrics_port),
    }
    if instance.service in ("orchestrator", "executor"):
        env[f"{p}POLICY_TARGET"] = _peer(instances, "policy", instance.replica, host)
    if instance.service == "executor":
        env[f"{p}ORCHESTRATOR_TARGET"] = _peer(instances, "orchestrator", instance.replica, host)
        # Stable across restarts, so the jobs table says which process held a lease.
        env[f"{p}WORKER_ID"] = instance.name
    return env


def _peer(instances: list[Instance], service: str, replica: int, host: str) -> str:
    peers = [i for i in instances if i.service == service]
    return f"{host}:{peers[replica % len(peers)].port}"
