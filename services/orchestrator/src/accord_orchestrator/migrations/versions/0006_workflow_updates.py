"""Workflows change under an etag, and remember the request ids of their updates.

Revision ID: 0006_workflow_updates
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_workflow_updates"
down_revision = "0005"

S = "orchestrator"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column(
        "workflows", sa.Column("etag", sa.Text, nullable=False, server_default=""), schema=S
    )
    op.execute("UPDATE orchestrator.workflows SET etag = md5(workflow_id || random()::text)")
    op.create_table(
        "workflow_updates",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("workflow_id", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("create_time", TZ, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "request_id", name="pk_workflow_updates"),
        schema=S,
    )
    op.create_index(
        "ix_workflow_updates_workflow_id", "workflow_updates", ["workflow_id"], schema=S
    )


def downgrade() -> None:
    op.drop_index("ix_workflow_updates_workflow_id", "workflow_updates", schema=S)
    op.drop_table("workflow_updates", schema=S)
    op.drop_column("workflows", "etag", schema=S)
