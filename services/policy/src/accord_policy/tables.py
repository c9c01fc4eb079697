"""The policy service's tables, in its own `policy` schema."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
)

from accord_kit.db import metadata
from accord_kit.idempotency import outcomes_table
from accord_kit.outbox import outbox_table

SCHEMA = "policy"
meta = metadata(SCHEMA)

policies = Table(
    "policies",
    meta,
    Column("policy_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("display_name", Text, nullable=False),
    # Serialized accord.policy.v1.PolicyRules: the rules evolve with the proto, not the schema.
    Column("rules", LargeBinary, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("etag", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("update_time", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant_id", "display_name"),
    UniqueConstraint("tenant_id", "request_id"),
)

# One row per tenant: the policy-set revision every decision is stamped with.
revisions = Table(
    "revisions",
    meta,
    Column("tenant_id", Text, primary_key=True),
    Column("revision", BigInteger, nullable=False),
)

decisions = Table(
    "decisions",
    meta,
    Column("decision_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("revision", BigInteger, nullable=False),
    # Serialized accord.common.v1.PolicyDecision, as returned.
    Column("decision", LargeBinary, nullable=False),
    Column("decide_time", DateTime(timezone=True), nullable=False),
)

# One row per (tenant, host) with a rate limit: the shared token bucket, locked while taken.
hosts = Table(
    "hosts",
    meta,
    Column("tenant_id", Text, primary_key=True),
    Column("host", Text, primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("refill_time", DateTime(timezone=True), nullable=False),
)

# Held concurrency slots; a row past its expire_time no longer counts (its holder died).
permits = Table(
    "permits",
    meta,
    Column("permit_id", Text, primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False),
)

# robots.txt per origin, shared by every policy process and tenant: status 0 = unreachable.
robots = Table(
    "robots",
    meta,
    Column("origin", Text, primary_key=True),
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("fetch_time", DateTime(timezone=True), nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False),
)

outbox = outbox_table(meta)
# Answers of policy updates and deletes, kept for their request ids' repeats.
outcomes = outcomes_table(meta)
