"""Workflows change under an etag.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

S = "orchestrator"


def upgrade() -> None:
    op.add_column(
        "workflows", sa.Column("etag", sa.Text, nullable=False, server_default=""), schema=S
    )
    op.execute("UPDATE orchestrator.workflows SET etag = md5(workflow_id || random()::text)")


def downgrade() -> None:
    op.drop_column("workflows", "etag", schema=S)
