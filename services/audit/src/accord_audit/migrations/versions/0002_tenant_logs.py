"""Per-tenant logs: tenant chain columns, the Merkle tree's nodes, checkpoints and their keys.

Records already in the log are linked into their tenants' logs and trees here, in log order.

Revision ID: 0002
Revises: 0001
"""

from datetime import UTC

import sqlalchemy as sa
from alembic import op

from accord_audit.domain import chain, merkle
from accord_audit.domain.records import Event, Record

revision = "0002"
down_revision = "0001"

S = "audit"
BLOB = sa.LargeBinary


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    for name in ("tenant_index", "payload_digest", "tenant_prev_hash", "tenant_hash"):
        kind = sa.BigInteger if name == "tenant_index" else BLOB
        op.add_column("records", sa.Column(name, kind, nullable=True), schema=S)
    op.add_column("records", sa.Column("erase_time", tz, nullable=True), schema=S)
    op.create_table(
        "logs",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("head_hash", BLOB, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_logs"),
        schema=S,
    )
    op.create_table(
        "tree_nodes",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("node_index", sa.BigInteger, nullable=False),
        sa.Column("hash", BLOB, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "level", "node_index", name="pk_tree_nodes"),
        schema=S,
    )
    op.create_table(
        "checkpoints",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root_hash", BLOB, nullable=False),
        sa.Column("checkpoint_time", tz, nullable=False),
        sa.Column("note", BLOB, nullable=False),
        sa.Column("signature", BLOB, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "tree_size", name="pk_checkpoints"),
        schema=S,
    )
    op.create_table(
        "checkpoint_keys",
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("public_key", BLOB, nullable=False),
        sa.Column("first_use_time", tz, nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_checkpoint_keys"),
        schema=S,
    )
    _link_existing()
    for name in ("tenant_index", "payload_digest", "tenant_prev_hash", "tenant_hash"):
        op.alter_column("records", name, nullable=False, schema=S)
    op.drop_index("ix_records_tenant_index", "records", schema=S)
    op.create_unique_constraint(
        "uq_records_tenant_id", "records", ["tenant_id", "tenant_index"], schema=S
    )
    op.create_index(
        "ix_records_unerased",
        "records",
        ["append_time"],
        schema=S,
        postgresql_where=sa.text("erase_time IS NULL"),
    )


def _link_existing() -> None:
    """Give every existing record its tenant-log link and tree leaves, in log order."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT * FROM audit.records ORDER BY record_index")).all()
    heads: dict[str, tuple[int, bytes]] = {}
    for row in rows:
        event = Event(
            row.event_id,
            row.event_type,
            row.tenant_id,
            row.aggregate_type,
            row.aggregate_id,
            row.event_time.astimezone(UTC),
            bytes(row.envelope),
        )
        tenant = row.tenant_id
        size = heads.get(tenant, (0, chain.GENESIS))[0]
        plain = Record(row.record_index, event, row.append_time, row.prev_hash, row.hash)
        [linked], heads = chain.tenant_links(heads, [plain])
        link = linked.link
        bind.execute(
            sa.text(
                "UPDATE audit.records SET tenant_index = :i, payload_digest = :d, "
                "tenant_prev_hash = :p, tenant_hash = :h WHERE record_index = :r"
            ),
            {
                "i": link.index,
                "d": link.payload_digest,
                "p": link.prev_hash,
                "h": link.hash,
                "r": row.record_index,
            },
        )
        known = _frontier(bind, tenant, size)
        for (level, index), digest in merkle.append(size, known, [link.hash]).items():
            bind.execute(
                sa.text("INSERT INTO audit.tree_nodes VALUES (:t, :l, :i, :h)"),
                {"t": tenant, "l": level, "i": index, "h": digest},
            )
    for tenant, (size, head) in heads.items():
        bind.execute(
            sa.text("INSERT INTO audit.logs VALUES (:t, :s, :h)"),
            {"t": tenant, "s": size, "h": head},
        )


def _frontier(bind: sa.Connection, tenant: str, size: int) -> dict[merkle.Node, bytes]:
    found: dict[merkle.Node, bytes] = {}
    for level, index in merkle.frontier(size):
        digest = bind.execute(
            sa.text(
                "SELECT hash FROM audit.tree_nodes "
                "WHERE tenant_id = :t AND level = :l AND node_index = :i"
            ),
            {"t": tenant, "l": level, "i": index},
        ).scalar_one()
        found[(level, index)] = bytes(digest)
    return found
