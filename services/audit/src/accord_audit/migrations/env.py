"""Alembic environment of the audit schema."""

from accord_audit.tables import meta
from accord_kit.migrations import run_env

run_env(meta)
