"""Initial schema: users, accounts and their rules and settings, the conversation log, chat state, orders,
delivery rules with their stock, deliveries, notification settings and the audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Spelled here rather than imported from models.py: a revision must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_account"), "audit_log", ["account_id", "id"])
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])

    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", TIMESTAMP, nullable=True),
        sa.Column("last_login_at", TIMESTAMP, nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("seller_id", sa.String(length=32), nullable=False),
        sa.Column("cookie_encrypted", sa.Text(), nullable=False),
        sa.Column("proxy_encrypted", sa.Text(), nullable=True),
        sa.Column("remark", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("pause_minutes", sa.Float(), nullable=False),
        sa.Column("auto_confirm", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_accounts_owner_id_users"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_index(op.f("ix_accounts_owner_id"), "accounts", ["owner_id"])
    op.create_index(op.f("ix_accounts_seller_id"), "accounts", ["seller_id"])

    op.create_table(
        "notification_settings",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("urls_encrypted", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_notification_settings_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_notification_settings")),
    )
    op.create_table(
        "account_settings",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("default_reply", sa.Text(), nullable=False),
        sa.Column("default_reply_once_per_chat", sa.Boolean(), nullable=False),
        sa.Column("debounce_seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_settings_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_settings")),
    )
    op.create_table(
        "ai_settings",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("max_discount_percent", sa.Float(), nullable=False),
        sa.Column("max_discount_amount", sa.Float(), nullable=False),
        sa.Column("max_bargain_rounds", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_ai_settings_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_ai_settings")),
    )
    op.create_table(
        "chat_state",
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("paused_until", TIMESTAMP, nullable=True),
        sa.Column("default_reply_sent", sa.Boolean(), nullable=False),
        sa.Column("bargain_rounds", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_chat_state_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("account_id", "chat_id", name=op.f("pk_chat_state")),
    )
    op.create_table(
        "delivery_rules",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(), nullable=True),
        sa.Column("title_keyword", sa.Text(), nullable=True),
        sa.Column("content_encrypted", sa.Text(), nullable=True),
        sa.Column("delay_seconds", sa.Float(), nullable=False),
        sa.Column("reusable_on_refund", sa.Boolean(), nullable=False),
        sa.Column("low_stock_threshold", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_delivery_rules_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_rules")),
    )
    op.create_index(op.f("ix_delivery_rules_account"), "delivery_rules", ["account_id", "position"])

    op.create_table(
        "messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("chat_id", sa.String(), nullable=False),
        sa.Column("message_id", sa.String(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("sender_id", sa.String(), nullable=True),
        sa.Column("sender_nick", sa.Text(), nullable=True),
        sa.Column("item_id", sa.String(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(length=32), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("reply_source", sa.String(length=128), nullable=True),
        sa.Column("reply_reason", sa.Text(), nullable=True),
        sa.Column("reply_to", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_messages_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "account_id", "direction", "message_id", name=op.f("uq_messages_account_id_direction_message_id")
        ),
    )
    op.create_index(op.f("ix_messages_account"), "messages", ["account_id", "id"])
    op.create_index(op.f("ix_messages_account_chat"), "messages", ["account_id", "chat_id", "id"])
    op.create_index(op.f("ix_messages_recorded_at"), "messages", ["recorded_at"])

    op.create_table(
        "orders",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("buyer_id", sa.String(), nullable=True),
        sa.Column("buyer_nick", sa.Text(), nullable=True),
        sa.Column("item_id", sa.String(), nullable=True),
        sa.Column("item_title", sa.Text(), nullable=True),
        sa.Column("chat_id", sa.String(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_orders_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
        sa.UniqueConstraint("account_id", "order_id", name=op.f("uq_orders_account_id_order_id")),
    )
    op.create_index(op.f("ix_orders_account"), "orders", ["account_id", "id"])

    op.create_table(
        "rules",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("keyword", sa.Text(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.Column("match", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_rules_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
        sa.UniqueConstraint("account_id", "position", name=op.f("uq_rules_account_id_position")),
        sa.UniqueConstraint("account_id", "rule_id", name=op.f("uq_rules_account_id_rule_id")),
    )
    op.create_table(
        "order_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("order_pk", BIG_ID, nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_pk"], ["orders.id"], name=op.f("fk_order_events_order_pk_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_events")),
    )
    op.create_index(op.f("ix_order_events_order"), "order_events", ["order_pk", "id"])

    op.create_table(
        "stock_lines",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("rule_id", BIG_ID, nullable=False),
        sa.Column("line_encrypted", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.String(), nullable=True),
        sa.Column("unit", sa.Integer(), nullable=True),
        sa.Column("reserved_at", TIMESTAMP, nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("returned_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["delivery_rules.id"], name=op.f("fk_stock_lines_rule_id_delivery_rules"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_lines")),
        sa.UniqueConstraint("rule_id", "order_id", "unit", name=op.f("uq_stock_lines_rule_id_order_id_unit")),
    )
    op.create_index(op.f("ix_stock_lines_rule_state"), "stock_lines", ["rule_id", "state", "id"])

    op.create_table(
        "deliveries",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(), nullable=False),
        sa.Column("unit", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rule_id", BIG_ID, nullable=True),
        sa.Column("stock_line_id", BIG_ID, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_deliveries_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["delivery_rules.id"], name=op.f("fk_deliveries_rule_id_delivery_rules"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["stock_line_id"],
            ["stock_lines.id"],
            name=op.f("fk_deliveries_stock_line_id_stock_lines"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("account_id", "order_id", "unit", name=op.f("uq_deliveries_account_id_order_id_unit")),
    )
    op.create_index(op.f("ix_deliveries_due"), "deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("stock_lines")
    op.drop_table("order_events")
    op.drop_table("rules")
    op.drop_table("orders")
    op.drop_table("messages")
    op.drop_table("delivery_rules")
    op.drop_table("chat_state")
    op.drop_table("ai_settings")
    op.drop_table("account_settings")
    op.drop_table("notification_settings")
    op.drop_table("accounts")
    op.drop_table("users")
    op.drop_table("audit_log")
