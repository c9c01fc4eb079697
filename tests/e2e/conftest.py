"""End-to-end fixtures: see suite.py."""

from tests.e2e.suite import site, suite

__all__ = ["site", "suite"]
