"""Executor service settings, from ACCORD_EXECUTOR_*; the executor keeps no database."""

import os
import socket

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from accord_kit.config import DEFAULT_NATS_URL, ServiceSettings, shared
from accord_kit.ports import DEFAULT_PORTS, default_target

P = "ACCORD_EXECUTOR_"


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=P, extra="ignore", populate_by_name=True)

    port: int = DEFAULT_PORTS["executor"].grpc
    metrics_port: int = DEFAULT_PORTS["executor"].metrics
    # NATS carries the token revocation list every call is checked against.
    nats_url: str = shared("NATS_URL", DEFAULT_NATS_URL, prefix=P)
    # Where WorkerService (leases) and PolicyService (permits) are served.
    orchestrator_target: str = default_target("orchestrator")
    policy_target: str = default_target("policy")
    # Seconds RunJob waits for a policy decision before failing UNAVAILABLE.
    policy_timeout: float = 5.0
    # Stable id of this process towards WorkerService; leases are held in its name.
    worker_id: str = Field(default_factory=_default_worker_id, min_length=1, max_length=128)
    # HTTP jobs run at once, and the HTTP connection pool's size.
    concurrency: int = Field(default=16, ge=1, le=1000)
    # Leased tasks kept waiting for a slot beyond the engines' capacity, so a slot that
    # frees is refilled at once instead of after the next poll. 0 turns the buffer off.
    prefetch: int = Field(default=16, ge=0, le=1000)
    # Longest PollTasks long poll, in seconds (WorkerService caps it at 60).
    poll_wait_seconds: float = Field(default=10.0, ge=0, le=60)
    # Lease length asked for; heartbeats extend held leases every third of it.
    lease_seconds: float = Field(default=30.0, ge=1, le=600)
    # Engines identify themselves honestly: Accord ships no user-agent spoofing.
    user_agent: str = "Accord/0.1 (+https://accord.dev/bot)"
    # PEM file of certificate authorities the HTTP engine trusts besides the system's
    # (a private CA of the tenant's own systems). Unset means the system's only.
    ca_file: str | None = None
    # Chromium to use; unset means Playwright's own install, then /usr/bin/chromium.
    browser_executable: str | None = None
    # Browser jobs run at once, beside (not within) the HTTP engine's `concurrency`.
    browser_concurrency: int = Field(default=4, ge=1, le=256)
    # Jobs one Chromium runs before it is replaced by a fresh one.
    browser_recycle_after: int = Field(default=200, ge=1, le=100_000)
    # Resident memory of Chromium's processes, in MiB, above which it is replaced.
    browser_max_memory_mb: int = Field(default=2048, ge=128)
    # Where screenshots and other artifacts are kept (content-addressed, per tenant).
    artifact_dir: str = Field(
        default_factory=lambda: os.path.expanduser("~/.local/share/accord/artifacts")
    )
    # Artifacts older than this many seconds are deleted (30 days by default), unless their
    # tenant's policies set a retention of their own (ListRetentions).
    artifact_retention_seconds: float = Field(default=30 * 86400, ge=3600)
    # Seconds between two prunings of the artifact store.
    artifact_prune_interval: float = Field(default=3600.0, gt=0)
