"""Outcomes of mutating calls other than creates, kept for their request ids' repeats.

Revision ID: 0006
Revises: 0005
"""

from accord_kit.idempotency import create_outcomes, drop_outcomes

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    create_outcomes("orchestrator")


def downgrade() -> None:
    drop_outcomes("orchestrator")
