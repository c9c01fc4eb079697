"""Alembic environment of the orchestrator schema."""

from accord_kit.migrations import run_env
from accord_orchestrator.tables import meta

run_env(meta)
