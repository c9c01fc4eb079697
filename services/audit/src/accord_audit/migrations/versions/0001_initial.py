"""The hash-chained audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

S = "audit"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "records",
        sa.Column("record_index", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("aggregate_type", sa.Text, nullable=False),
        sa.Column("aggregate_id", sa.Text, nullable=False),
        sa.Column("event_time", tz, nullable=False),
        sa.Column("append_time", tz, nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("record_index", name="pk_records"),
        sa.UniqueConstraint("event_id", name="uq_records_event_id"),
        schema=S,
    )
    op.create_index("ix_records_tenant_index", "records", ["tenant_id", "record_index"], schema=S)
    op.create_index(
        "ix_records_tenant_aggregate",
        "records",
        ["tenant_id", "aggregate_id", "record_index"],
        schema=S,
    )
