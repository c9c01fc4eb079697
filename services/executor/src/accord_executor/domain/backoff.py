"""Backoff moved to the kit, where the stack launcher shares it; kept here for old imports."""

from accord_kit.backoff import Backoff

__all__ = ["Backoff"]
