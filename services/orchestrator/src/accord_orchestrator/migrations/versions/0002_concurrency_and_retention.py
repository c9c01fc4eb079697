"""Concurrency keys on jobs, and the indexes that keep leasing and pruning cheap.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

S = "orchestrator"


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("concurrency_key", sa.Text, nullable=False, server_default=""), schema=S
    )
    op.add_column(
        "jobs",
        sa.Column("concurrency_limit", sa.Integer, nullable=False, server_default="0"),
        schema=S,
    )
    # Running jobs per concurrency key (4 = RUNNING), counted on every keyed lease.
    op.create_index(
        "ix_jobs_running_key",
        "jobs",
        ["tenant_id", "concurrency_key"],
        schema=S,
        postgresql_where=sa.text("state = 4 AND concurrency_key <> ''"),
    )
    # Finished jobs by age, for retention (2 REJECTED, 5 SUCCEEDED, 7 DEAD_LETTER, 8 CANCELLED).
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["finish_time"],
        schema=S,
        postgresql_where=sa.text("state IN (2, 5, 7, 8)"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished", "jobs", schema=S)
    op.drop_index("ix_jobs_running_key", "jobs", schema=S)
    op.drop_column("jobs", "concurrency_limit", schema=S)
    op.drop_column("jobs", "concurrency_key", schema=S)
