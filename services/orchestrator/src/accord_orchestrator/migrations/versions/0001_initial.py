"""Jobs, attempts, state changes and the outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from accord_kit.outbox import create_outbox

revision = "0001"
down_revision = None

S = "orchestrator"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("spec", sa.LargeBinary, nullable=False),
        sa.Column("spec_hash", sa.Text, nullable=False),
        sa.Column("engine", sa.SmallInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("due_time", tz, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("attempt_limit", sa.Integer, nullable=False),
        sa.Column("lease_worker", sa.Text),
        sa.Column("lease_deadline", tz),
        sa.Column("decision", sa.LargeBinary),
        sa.Column("result", sa.LargeBinary),
        sa.Column("status_message", sa.Text, nullable=False),
        sa.Column("schedule_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("create_time", tz, nullable=False),
        sa.Column("update_time", tz, nullable=False),
        sa.Column("finish_time", tz),
        sa.UniqueConstraint("tenant_id", "request_id", name="uq_jobs_tenant_id"),
        schema=S,
    )
    op.create_index(
        "ix_jobs_tenant_created", "jobs", ["tenant_id", "create_time", "job_id"], schema=S
    )
    # The queue: leasable jobs by priority then due time (state 3 = QUEUED).
    op.create_index(
        "ix_jobs_queue",
        "jobs",
        [sa.text("priority DESC"), "due_time"],
        schema=S,
        postgresql_where=sa.text("state = 3"),
    )
    # Expired leases and due retries (4 = RUNNING, 6 = FAILED).
    op.create_index(
        "ix_jobs_lease", "jobs", ["lease_deadline"], schema=S, postgresql_where=sa.text("state = 4")
    )
    op.create_index(
        "ix_jobs_retry", "jobs", ["due_time"], schema=S, postgresql_where=sa.text("state = 6")
    )
    op.create_table(
        "attempts",
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.Text, nullable=False),
        sa.Column("start_time", tz, nullable=False),
        sa.Column("finish_time", tz),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("error_code", sa.Text, nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "number", name="pk_attempts"),
        schema=S,
    )
    op.create_table(
        "changes",
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("previous_state", sa.SmallInteger, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("change_time", tz, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("job_id", "version", name="pk_changes"),
        schema=S,
    )
    create_outbox(S)
