"""Policies, per-tenant revisions, decisions and the outbox.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from accord_kit.outbox import create_outbox

revision = "0001"
down_revision = None

S = "policy"


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "policies",
        sa.Column("policy_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("rules", sa.LargeBinary, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("create_time", tz, nullable=False),
        sa.Column("update_time", tz, nullable=False),
        sa.PrimaryKeyConstraint("policy_id", name="pk_policies"),
        sa.UniqueConstraint("tenant_id", "display_name", name="uq_policies_tenant_id"),
        sa.UniqueConstraint("tenant_id", "request_id", name="uq_policies_request_id"),
        schema=S,
    )
    op.create_table(
        "revisions",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        schema=S,
    )
    op.create_table(
        "decisions",
        sa.Column("decision_id", sa.Text, primary_key=True),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("allowed", sa.Boolean, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("decision", sa.LargeBinary, nullable=False),
        sa.Column("decide_time", tz, nullable=False),
        schema=S,
    )
    op.create_index("ix_decisions_tenant_job", "decisions", ["tenant_id", "job_id"], schema=S)
    create_outbox(S)
