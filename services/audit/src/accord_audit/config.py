"""Audit service settings, from ACCORD_AUDIT_* (and the suite-wide ACCORD_* URLs)."""

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
    # Messages fetched per pull, appended in one transaction.
    batch_size: int = Field(default=100, ge=1, le=1000)
    # Seconds one pull waits for messages before asking again.
    fetch_timeout: float = Field(default=1.0, gt=0)
    # Seconds before JetStream redelivers a message this replica took but did not ack.
    ack_wait: float = Field(default=30.0, gt=0)
    # First and longest pause, in seconds, between retries while NATS or Postgres is down.
    retry_initial: float = Field(default=0.1, gt=0)
    retry_max: float = Field(default=5.0, gt=0)
    # Seconds between checks for new records while StreamRecords follows the log.
    stream_poll_interval: float = Field(default=0.2, gt=0)
