"""End-to-end fixtures: see suite.py."""

from tests.e2e.suite import launch, site, suite

__all__ = ["launch", "site", "suite"]
