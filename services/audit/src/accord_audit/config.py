"""Audit service settings, from ACCORD_AUDIT_* (and the suite-wide ACCORD_* URLs)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from accord_kit.config import DEFAULT_DATABASE_URL, DEFAULT_NATS_URL, ServiceSettings, shared
from accord_kit.ports import DEFAULT_PORTS

P = "ACCORD_AUDIT_"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=P, extra="ignore", populate_by_name=True)

    port: int = DEFAULT_PORTS["audit"].grpc
    metrics_port: int = DEFAULT_PORTS["audit"].metrics
    database_url: str = shared("DATABASE_URL", DEFAULT_DATABASE_URL, prefix=P)
    nats_url: str = shared("NATS_URL", DEFAULT_NATS_URL, prefix=P)
    # Producers whose JetStream streams (`ACCORD_<PRODUCER>`) are audited; a JSON list in env.
    producers: list[str] = Field(default=["orchestrator", "policy"], min_length=1)
    # Durable consumer name on each stream; replicas share it so each event reaches one.
    durable_name: str = Field(default="accord-audit", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Messages fetched per pull, appended in one transaction. A pull returns what is there,
    # so a large batch adds no wait; under load it amortises the append transaction's round
    # trips (bench/audit_log.py: batch 1000 appends ~2.5x the rate of batch 100).
    batch_size: int = Field(default=1000, ge=1, le=1000)
    # Seconds to wait after a pull that brought less than a full batch: under a trickle the
    # events gather into fewer, larger transactions (each costs the same round trips whatever
    # its size), at the price of at most this much audit lag. 0 pulls again at once.
    linger: float = Field(default=0.05, ge=0, le=5)
    # Seconds one pull waits for messages before asking again.
    fetch_timeout: float = Field(default=1.0, gt=0)
    # Seconds before JetStream redelivers a message this replica took but did not ack.
    ack_wait: float = Field(default=30.0, gt=0)
    # First and longest pause, in seconds, between retries while NATS or Postgres is down.
    retry_initial: float = Field(default=0.1, gt=0)
    retry_max: float = Field(default=5.0, gt=0)
    # Seconds between checks for new records while StreamRecords follows the log.
    stream_poll_interval: float = Field(default=0.2, gt=0)
    # The log ids of checkpoints are `<log_origin>/tenant/<tenant>`: name the deployment here.
    log_origin: str = Field(default="accord.audit", pattern=r"^[A-Za-z0-9._:-]{1,128}$")
    # An Ed25519 private JWK with a `kid` (the token key format) that signs checkpoints; it is
    # re-read when the file changes, so rotating is replacing it. Unset: a key made at start.
    checkpoint_key_file: Path | None = None
    # Seconds between passes that sign a checkpoint of every tenant log that has grown.
    checkpoint_interval: float = Field(default=10.0, gt=0)
    # Days each tenant's records keep their payload (tenant -> days; JSON in env). After it,
    # retention erases aggregate_id and envelope; hashes and proofs stay. Absent: kept forever.
    retention_days: dict[str, float] = Field(default_factory=dict)
    # Seconds between retention passes.
    retention_interval: float = Field(default=60.0, gt=0)
