"""Scale-out: worker nodes, bucket leases (owner, fencing epoch, expiry) and the command queue of API nodes.

Revision ID: 0002_scale_out
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Spelled here rather than imported from models.py: a revision must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0002_scale_out"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(length=128), nullable=False),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_nodes")),
    )
    op.create_table(
        "bucket_leases",
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("bucket", name=op.f("pk_bucket_leases")),
    )
    op.create_table(
        "commands",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("done_at", TIMESTAMP, nullable=True),
        sa.Column("handled_by", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commands")),
    )
    op.create_index(op.f("ix_commands_pending"), "commands", ["bucket", "done_at", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_commands_pending"), table_name="commands")
    op.drop_table("commands")
    op.drop_table("bucket_leases")
    op.drop_table("nodes")
