"""Orchestrator settings, from ACCORD_ORCHESTRATOR_* (and the suite-wide ACCORD_* URLs)."""

from datetime import timedelta

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from accord_kit.config import DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, ServiceSettings, shared
from accord_kit.ports import DEFAULT_PORTS, default_target

P = "ACCORD_ORCHESTRATOR_"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=P, extra="ignore", populate_by_name=True)

    port: int = DEFAULT_PORTS["orchestrator"].grpc
    metrics_port: int = DEFAULT_PORTS["orchestrator"].metrics
    database_url: str = shared("DATABASE_URL", DEFAULT_DATABASE_URL, prefix=P)
    nats_url: str = shared("NATS_URL", DEFAULT_NATS_URL, prefix=P)
    # host:port of the policy service.
    policy_target: str = default_target("policy")
    # Seconds CreateJob waits for a policy decision before failing UNAVAILABLE.
    policy_timeout: float = 5.0
    # Seconds between passes that expire lost leases and queue due retries.
    reaper_interval: float = 1.0
    # Seconds between counts of the queue's depth for the metrics (one grouped query).
    metrics_interval: float = Field(default=5.0, gt=0)
    # Seconds between queue checks during a long poll (work created here wakes it at once).
    poll_interval: float = 0.1
    # Finished jobs (and their attempts and history) are deleted this long after they
    # finish, unless their tenant's policies set a retention of their own (ListRetentions);
    # 0 keeps them forever. Default 7 days.
    retention: timedelta = Field(default=timedelta(days=7), ge=timedelta(0))
    # Seconds between retention passes, and jobs deleted per transaction (small, so a pass
    # never holds up the queue).
    prune_interval: float = Field(default=60.0, gt=0)
    prune_batch: int = Field(default=500, ge=1, le=10000)
    # Whether this replica runs the schedule firing loop (any number of replicas may).
    fire_schedules: bool = True
    # Longest sleep of the firing loop, in seconds. Schedule changes wake every replica at
    # once (NOTIFY); this bounds how late one is seen should a notification be lost.
    schedule_idle_interval: float = Field(default=5.0, gt=0, le=60)
    # Firing passes one replica runs at once (each over the schedules it claimed).
    schedule_passes: int = Field(default=4, ge=1, le=32)
    # Whether this replica runs the loops that judge workflow jobs and deliver webhooks
    # (any number of replicas may; each job is judged once, each delivery sent by one).
    run_workflows: bool = True
    # Longest sleep, in seconds, of the judging loop between looks for ended jobs.
    workflow_interval: float = Field(default=0.5, gt=0, le=60)
    # How long after a workflow's job ended it may still be judged. Each pass looks only
    # this far back, so it stays cheap however long the job history; a job that ended
    # while no replica judged for longer than this is never judged. Default 1 day.
    workflow_lookback: timedelta = Field(default=timedelta(days=1), gt=timedelta(0))
    # Key that seals webhook secrets at rest: base64 of 32 random bytes (e.g.
    # `openssl rand -base64 32`), the same on every replica. Unset means workflows cannot
    # have webhooks.
    webhook_key: SecretStr | None = None
    # Attempts per delivery, and the backoff between them (full jitter), in seconds.
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_initial_backoff: float = Field(default=1.0, gt=0, le=3600)
    webhook_max_backoff: float = Field(default=300.0, gt=0, le=86400)
    # Seconds one attempt may take, the policy decision included.
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
