"""Alembic environment of the policy schema."""

from accord_kit.migrations import run_env
from accord_policy.tables import meta

run_env(meta)
