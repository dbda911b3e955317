"""Resume what was recorded: inbound rows keep what a replay needs, and the open ones are found by an index.

A push is acknowledged only after its items are recorded (docs/reliability.md), so the log's inbound rows are the
engine's durable inbox: `received` (recorded, not decided), `replying` (a reply was claimed and may be on the
wire). `event` keeps what a row's columns do not (an order card's order id and status) so that it can be replayed.
Order rows written before this revision were applied when they arrived: they are marked `applied`.

Revision ID: 0003_inbound_resume
Revises: 0002_scale_out
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_inbound_resume"
down_revision: str | Sequence[str] | None = "0002_scale_out"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled here rather than imported from models.py: a revision must not change when the models do.
OPEN = "direction = 'in' AND status IN ('received', 'replying')"


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("event", sa.JSON(), nullable=True))
    op.execute("UPDATE messages SET status = 'applied' WHERE content_type = 'order' AND status = 'received'")
    op.create_index(
        op.f("ix_messages_open"),
        "messages",
        ["account_id", "id"],
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_messages_open"), table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("event")
