"""Workflows, their webhooks, the jobs they ran, their results and webhook deliveries.

Revision ID: 0005
Revises: 0004_job_trace
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004_job_trace"

S = "orchestrator"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("workflow_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("body_hash", sa.Text, nullable=False),
        sa.Column("schedule_id", sa.Text, nullable=False),
        sa.Column("state", postgresql.JSONB, nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.UniqueConstraint("tenant_id", "request_id", name="uq_workflows_tenant_id_request_id"),
        sa.UniqueConstraint(
            "tenant_id", "display_name", name="uq_workflows_tenant_id_display_name"
        ),
        sa.UniqueConstraint("schedule_id", name="uq_workflows_schedule_id"),
        schema=S,
    )
    op.create_index(
        "ix_workflows_tenant_created",
        "workflows",
        ["tenant_id", "create_time", "workflow_id"],
        schema=S,
    )
    op.create_table(
        "webhooks",
        sa.Column("webhook_id", sa.Text, primary_key=True),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("kinds", postgresql.JSONB, nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        schema=S,
    )
    op.create_index("ix_webhooks_workflow_id", "webhooks", ["workflow_id"], schema=S)
    op.create_table(
        "workflow_jobs",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("first_job_id", sa.Text, nullable=False),
        sa.Column("page", sa.Integer, nullable=False),
        sa.Column("judged", sa.Boolean, nullable=False),
        schema=S,
    )
    op.create_index("ix_workflow_jobs_run", "workflow_jobs", ["first_job_id", "page"], schema=S)
    op.create_table(
        "workflow_results",
        sa.Column("result_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("notification", sa.SmallInteger, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("check_time", TZ, nullable=False),
        sa.UniqueConstraint("job_id", name="uq_workflow_results_job_id"),
        schema=S,
    )
    op.create_index(
        "ix_workflow_results_workflow", "workflow_results", ["workflow_id", "result_id"], schema=S
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.Text, primary_key=True),
        sa.Column("webhook_id", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("kind", sa.SmallInteger, nullable=False),
        sa.Column("result_id", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("attempts", postgresql.JSONB, nullable=False),
        sa.Column("next_time", TZ),
        sa.Column("create_time", TZ, nullable=False),
        sa.Column("update_time", TZ, nullable=False),
        sa.UniqueConstraint(
            "webhook_id", "request_id", name="uq_webhook_deliveries_webhook_id_request_id"
        ),
        schema=S,
    )
    op.create_index(
        "ix_webhook_deliveries_log",
        "webhook_deliveries",
        ["webhook_id", "create_time", "delivery_id"],
        schema=S,
    )
    # The delivery loop's one question, "what is due next?" (1 = PENDING).
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_time"],
        schema=S,
        postgresql_where=sa.text("state = 1"),
    )

    # The judging loop's scan: jobs of schedules that ended recently.
    op.create_index(
        "ix_jobs_schedule_finished",
        "jobs",
        ["finish_time"],
        schema=S,
        postgresql_where=sa.text("schedule_id <> '' AND finish_time IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_schedule_finished", "jobs", schema=S)
    for table in (
        "webhook_deliveries",
        "workflow_results",
        "workflow_jobs",
        "webhooks",
        "workflows",
    ):
        op.drop_table(table, schema=S)
