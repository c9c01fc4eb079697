"""The orchestrator's tables, in its own `orchestrator` schema."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
)

from accord_kit.db import metadata
from accord_kit.outbox import outbox_table

SCHEMA = "orchestrator"
meta = metadata(SCHEMA)
TZ = DateTime(timezone=True)

jobs = Table(
    "jobs",
    meta,
    Column("job_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    # Serialized accord.common.v1.JobSpec, and its SHA-256 to compare idempotent retries.
    Column("spec", LargeBinary, nullable=False),
    Column("spec_hash", Text, nullable=False),
    Column("engine", SmallInteger, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("due_time", TZ, nullable=False),
    # The current (or last) attempt number; leases and reports are fenced by it.
    Column("attempt", Integer, nullable=False),
    # The highest attempt number allowed before DEAD_LETTER; RetryJob raises it.
    Column("attempt_limit", Integer, nullable=False),
    Column("lease_worker", Text),
    Column("lease_deadline", TZ),
    Column("decision", LargeBinary),
    Column("result", LargeBinary),
    Column("status_message", Text, nullable=False),
    Column("schedule_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("create_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
    Column("finish_time", TZ),
    # JobSpec.concurrency: at most `concurrency_limit` RUNNING jobs per (tenant, key).
    Column("concurrency_key", Text, nullable=False, server_default=""),
    Column("concurrency_limit", Integer, nullable=False, server_default="0"),
    UniqueConstraint("tenant_id", "request_id"),
    Index("ix_jobs_tenant_created", "tenant_id", "create_time", "job_id"),
)

attempts = Table(
    "attempts",
    meta,
    Column("job_id", Text, nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker_id", Text, nullable=False),
    Column("start_time", TZ, nullable=False),
    Column("finish_time", TZ),
    Column("outcome", SmallInteger, nullable=False),
    Column("error_code", Text, nullable=False),
    Column("error_message", Text, nullable=False),
    PrimaryKeyConstraint("job_id", "number"),
)

# Every state change of every job, for WatchJob to stream and resume from.
changes = Table(
    "changes",
    meta,
    Column("job_id", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("previous_state", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("change_time", TZ, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("message", Text, nullable=False),
    PrimaryKeyConstraint("job_id", "version"),
)

outbox = outbox_table(meta)
