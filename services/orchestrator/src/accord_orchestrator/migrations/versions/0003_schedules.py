"""Schedules and the record of what each fire did.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"

S = "orchestrator"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("schedule_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("body_hash", sa.Text, nullable=False),
        sa.Column("labels", postgresql.JSONB, nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False),
        sa.Column("pause_note", sa.Text, nullable=False),
        sa.Column("next_time", TZ),
        sa.Column("due_time", TZ),
        sa.Column("buffered_time", TZ),
        sa.Column("last_job_id", sa.Text, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.UniqueConstraint("tenant_id", "request_id", name="uq_schedules_tenant_id_request_id"),
        sa.UniqueConstraint(
            "tenant_id", "display_name", name="uq_schedules_tenant_id_display_name"
        ),
        schema=S,
    )
    # The firing loop's one question, "what is due next?", is the head of this index.
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["due_time"],
        schema=S,
        postgresql_where=sa.text("NOT paused AND due_time IS NOT NULL"),
    )
    op.create_index(
        "ix_schedules_tenant_created",
        "schedules",
        ["tenant_id", "create_time", "schedule_id"],
        schema=S,
    )
    op.create_table(
        "schedule_actions",
        sa.Column("action_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("schedule_id", sa.Text, nullable=False),
        sa.Column("schedule_time", TZ, nullable=False),
        sa.Column("fire_time", TZ, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("job_state", sa.SmallInteger, nullable=False),
        sa.Column("skipped", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("fire_count", sa.Integer, nullable=False),
        schema=S,
    )
    op.create_index(
        "ix_schedule_actions_schedule", "schedule_actions", ["schedule_id", "action_id"], schema=S
    )
    # ListJobs filtered by schedule.
    op.create_index(
        "ix_jobs_schedule",
        "jobs",
        ["tenant_id", "schedule_id", "create_time"],
        schema=S,
        postgresql_where=sa.text("schedule_id <> ''"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_schedule", "jobs", schema=S)
    op.drop_table("schedule_actions", schema=S)
    op.drop_table("schedules", schema=S)
