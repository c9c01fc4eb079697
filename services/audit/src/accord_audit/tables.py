"""The audit service's tables, in its own `audit` schema."""

from sqlalchemy import BigInteger, Column, DateTime, Index, LargeBinary, Table, Text

from accord_kit.db import metadata

SCHEMA = "audit"
meta = metadata(SCHEMA)

# The append-only, hash-chained log. Rows are only ever inserted, under one lock, with
# record_index one past the head; `hash` chains each row to the one before it.
records = Table(
    "records",
    meta,
    Column("record_index", BigInteger, primary_key=True, autoincrement=False),
    # Unique: a redelivered event finds its row and is not appended again.
    Column("event_id", Text, nullable=False, unique=True),
    Column("event_type", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    # Microsecond precision: the value hashed is the value stored (see domain/chain.py).
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("append_time", DateTime(timezone=True), nullable=False),
    # The serialized accord.events.v1.EventEnvelope, exactly as received.
    Column("envelope", LargeBinary, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Index("ix_records_tenant_index", "tenant_id", "record_index"),
    Index("ix_records_tenant_aggregate", "tenant_id", "aggregate_id", "record_index"),
)
