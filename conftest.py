"""Fixtures shared by every test in the suite: real PostgreSQL, NATS and gRPC helpers."""

pytest_plugins = ["accord_kit.testing"]
