"""The audit service's tables, in its own `audit` schema."""

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
)

from accord_kit.db import metadata

SCHEMA = "audit"
meta = metadata(SCHEMA)

# The append-only, hash-chained log. Rows are only ever inserted, under one lock, with
# record_index one past the head; `hash` chains each row to the one before it. Each row is
# also in its tenant's own log: tenant_index, payload_digest, tenant_prev_hash, tenant_hash.
# Retention only ever blanks aggregate_id and envelope and sets erase_time.
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
    Column("tenant_index", BigInteger, nullable=False),
    Column("payload_digest", LargeBinary, nullable=False),
    Column("tenant_prev_hash", LargeBinary, nullable=False),
    Column("tenant_hash", LargeBinary, nullable=False),
    Column("erase_time", DateTime(timezone=True), nullable=True),
    UniqueConstraint("tenant_id", "tenant_index"),
    Index("ix_records_tenant_aggregate", "tenant_id", "aggregate_id", "record_index"),
    Index("ix_records_unerased", "append_time", postgresql_where="erase_time IS NULL"),
)

# One row per tenant log: its size and head hash, read and moved under the append lock.
logs = Table(
    "logs",
    meta,
    Column("tenant_id", Text, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("head_hash", LargeBinary, nullable=False),
)

# The hashes of the complete (perfect) subtrees of each tenant's Merkle tree; see
# domain/merkle.py. Level 0 holds the leaf hashes. Written once, with the records they cover.
tree_nodes = Table(
    "tree_nodes",
    meta,
    Column("tenant_id", Text, nullable=False),
    Column("level", SmallInteger, nullable=False),
    Column("node_index", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    PrimaryKeyConstraint("tenant_id", "level", "node_index"),
)

# Signed checkpoints, one per tenant log and size.
checkpoints = Table(
    "checkpoints",
    meta,
    Column("tenant_id", Text, nullable=False),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("checkpoint_time", DateTime(timezone=True), nullable=False),
    Column("note", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("key_id", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "tree_size"),
)

# Every public key that has signed a checkpoint, so that old checkpoints stay checkable.
checkpoint_keys = Table(
    "checkpoint_keys",
    meta,
    Column("key_id", Text, primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("first_use_time", DateTime(timezone=True), nullable=False),
)
