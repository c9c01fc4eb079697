"""Each job keeps the trace context of its admission, so its later spans join that trace.

Revision ID: 0004_job_trace
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_job_trace"
down_revision = "0003"

S = "orchestrator"


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("traceparent", sa.Text, nullable=False, server_default=""), schema=S
    )


def downgrade() -> None:
    op.drop_column("jobs", "traceparent", schema=S)
