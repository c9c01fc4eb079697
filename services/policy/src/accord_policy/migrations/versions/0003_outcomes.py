"""Outcomes of policy updates and deletes, kept for their request ids' repeats.

Revision ID: 0003
Revises: 0002
"""

from accord_kit.idempotency import create_outcomes, drop_outcomes

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    create_outcomes("policy")


def downgrade() -> None:
    drop_outcomes("policy")
