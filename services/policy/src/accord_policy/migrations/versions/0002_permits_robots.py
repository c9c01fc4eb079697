"""Per-host token buckets and permits shared by every policy process; the robots.txt cache.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

S = "policy"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "hosts",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("refill_time", tz, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "host", name="pk_hosts"),
        schema=S,
    )
    op.create_table(
        "permits",
        sa.Column("permit_id", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("expire_time", tz, nullable=False),
        sa.PrimaryKeyConstraint("permit_id", name="pk_permits"),
        schema=S,
    )
    op.create_index("ix_permits_tenant_host", "permits", ["tenant_id", "host"], schema=S)
    op.create_table(
        "robots",
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("fetch_time", tz, nullable=False),
        sa.Column("expire_time", tz, nullable=False),
        sa.PrimaryKeyConstraint("origin", name="pk_robots"),
        schema=S,
    )


def downgrade() -> None:
    op.drop_table("robots", schema=S)
    op.drop_index("ix_permits_tenant_host", "permits", schema=S)
    op.drop_table("permits", schema=S)
    op.drop_table("hosts", schema=S)
