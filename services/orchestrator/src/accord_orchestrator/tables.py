"""The orchestrator's tables, in its own `orchestrator` schema."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from accord_kit.db import metadata
from accord_kit.idempotency import outcomes_table
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
    # W3C traceparent of the job's admission span ("" when tracing is off).
    Column("traceparent", Text, nullable=False, server_default=""),
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

# A schedule: its definition (`body`, an accord.orchestrator.v1.Schedule without server
# fields) and the firing loop's state. `due_time` is when the loop next looks at it: the
# next nominal fire plus jitter, or sooner while a buffered fire waits for its job.
schedules = Table(
    "schedules",
    meta,
    Column("schedule_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("body_hash", Text, nullable=False),
    Column("labels", JSONB, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("pause_note", Text, nullable=False),
    Column("next_time", TZ),
    Column("due_time", TZ),
    Column("buffered_time", TZ),
    Column("last_job_id", Text, nullable=False),
    Column("etag", Text, nullable=False),
    Column("create_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
    UniqueConstraint("tenant_id", "request_id"),
    UniqueConstraint("tenant_id", "display_name"),
)

# What each fire of a schedule did, for GetSchedule's recent actions.
schedule_actions = Table(
    "schedule_actions",
    meta,
    Column("action_id", BigInteger, Identity(), primary_key=True),
    Column("schedule_id", Text, nullable=False),
    Column("schedule_time", TZ, nullable=False),
    Column("fire_time", TZ, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("job_state", SmallInteger, nullable=False),
    Column("skipped", Boolean, nullable=False),
    Column("note", Text, nullable=False),
    Column("fire_count", Integer, nullable=False),
)

# A workflow: its definition (`body`, an accord.orchestrator.v1.Workflow without server
# fields and webhook secrets), the schedule that runs it, and what its judgements carry
# forward (`state`, see domain/workflows.State).
workflows = Table(
    "workflows",
    meta,
    Column("workflow_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("body_hash", Text, nullable=False),
    Column("schedule_id", Text, nullable=False, unique=True),
    Column("state", JSONB, nullable=False),
    # Renewed by every update of the definition (UpdateWorkflow's precondition).
    Column("etag", Text, nullable=False),
    Column("create_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
    UniqueConstraint("tenant_id", "request_id"),
    UniqueConstraint("tenant_id", "display_name"),
    Index("ix_workflows_tenant_created", "tenant_id", "create_time", "workflow_id"),
)

# A workflow's webhooks; `secret` is sealed (see secrets.SecretBox), never stored in clear.
webhooks = Table(
    "webhooks",
    meta,
    Column("webhook_id", Text, primary_key=True),
    Column("workflow_id", Text, nullable=False, index=True),
    Column("tenant_id", Text, nullable=False),
    Column("position", Integer, nullable=False),
    Column("url", Text, nullable=False),
    Column("kinds", JSONB, nullable=False),
    Column("secret", LargeBinary, nullable=False),
)

# The jobs a workflow ran and whether each was judged: the judging loop's exactly-once
# record. A listing's further pages name the run's first job.
workflow_jobs = Table(
    "workflow_jobs",
    meta,
    Column("job_id", Text, primary_key=True),
    Column("workflow_id", Text, nullable=False),
    Column("first_job_id", Text, nullable=False),
    Column("page", Integer, nullable=False),
    Column("judged", Boolean, nullable=False),
    Index("ix_workflow_jobs_run", "first_job_id", "page"),
)

# Every judged check, newest last (`result_id` grows).
workflow_results = Table(
    "workflow_results",
    meta,
    Column("result_id", BigInteger, Identity(), primary_key=True),
    Column("workflow_id", Text, nullable=False),
    Column("job_id", Text, nullable=False, unique=True),
    Column("outcome", SmallInteger, nullable=False),
    Column("notification", SmallInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("check_time", TZ, nullable=False),
    Index("ix_workflow_results_workflow", "workflow_id", "result_id"),
)

# Notifications to webhooks and every attempt to deliver them (the delivery log).
deliveries = Table(
    "webhook_deliveries",
    meta,
    Column("delivery_id", Text, primary_key=True),
    Column("webhook_id", Text, nullable=False),
    Column("workflow_id", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    # A test delivery's request id, else the delivery's id.
    Column("request_id", Text, nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("result_id", Text, nullable=False),
    # The JSON body, as sent on every attempt.
    Column("payload", LargeBinary, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("attempts", JSONB, nullable=False),
    Column("next_time", TZ),
    Column("create_time", TZ, nullable=False),
    Column("update_time", TZ, nullable=False),
    UniqueConstraint("webhook_id", "request_id"),
    Index("ix_webhook_deliveries_log", "webhook_id", "create_time", "delivery_id"),
)

outbox = outbox_table(meta)
# Answers of mutating calls other than creates, kept for their request ids' repeats.
outcomes = outcomes_table(meta)
