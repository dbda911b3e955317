"""The tables (SQLAlchemy 2 typed declarative), portable between SQLite and PostgreSQL.

Only the store imports these: everything outside it gets frozen records (`records.py`), never ORM objects.
Columns ending in `_encrypted` hold Fernet tokens (`crypto.py`), never plaintext. Every table that belongs to an
account is deleted with it (ON DELETE CASCADE); the audit log keeps the account id as plain text so that it
outlives the account. A schema change is a new Alembic revision in `migrations/versions/`; the test
`test_migrations_match_models` fails when the two drift apart.

Scale-out (issue 10): the node, bucket-lease and command tables at the end come with revision 0002.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Explicit constraint names: Alembic can only alter or drop a constraint it can name, and SQLite batch mode
# rebuilds tables from these names.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-incrementing rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    """Now, aware, in UTC: the only kind of datetime the tables hold."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite's DATETIME has no zone: stored as naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with the naming convention; `Base.metadata` is what migrations are checked against."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


def table_of(model: type[Base]) -> Table:
    """The model's `Table`: SQLAlchemy types `__table__` as any FromClause, but every model here maps a table."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a Table")
    return table


def _account_fk() -> ForeignKey:
    return ForeignKey("accounts.id", ondelete="CASCADE")


class UserRow(Base):
    """A person who logs in; `token_version` moves on password change or disable to void issued tokens."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AccountRow(Base):
    """A seller account; `version` moves on every write to it or to its rules and settings."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    seller_id: Mapped[str] = mapped_column(String(32), index=True)
    cookie_encrypted: Mapped[str] = mapped_column(Text)
    proxy_encrypted: Mapped[str | None] = mapped_column(Text)
    remark: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    pause_minutes: Mapped[float] = mapped_column(Float, default=10.0)
    auto_confirm: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RuleRow(Base):
    """A keyword rule; `position` keeps the seller's order, `rule_id` stays stable across edits."""

    __tablename__ = "rules"
    __table_args__ = (
        UniqueConstraint("account_id", "position"),
        UniqueConstraint("account_id", "rule_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[str] = mapped_column(_account_fk())
    rule_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    keyword: Mapped[str] = mapped_column(Text)
    reply: Mapped[str] = mapped_column(Text)
    match: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[str | None] = mapped_column(String)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))


class AccountSettingsRow(Base):
    """Reply settings of one account (one row per account, created with it)."""

    __tablename__ = "account_settings"

    account_id: Mapped[str] = mapped_column(_account_fk(), primary_key=True)
    default_reply: Mapped[str] = mapped_column(Text, default="")
    default_reply_once_per_chat: Mapped[bool] = mapped_column(Boolean, default=False)
    debounce_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AiSettingsRow(Base):
    """AI replies of one account; the API key is write-only from the outside."""

    __tablename__ = "ai_settings"

    account_id: Mapped[str] = mapped_column(_account_fk(), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    base_url: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(128), default="")
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    max_discount_percent: Mapped[float] = mapped_column(Float, default=10.0)
    max_discount_amount: Mapped[float] = mapped_column(Float, default=100.0)
    max_bargain_rounds: Mapped[int] = mapped_column(Integer, default=3)
    prompt: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


OPEN_INBOUND = "direction = 'in' AND status IN ('received', 'replying')"


class MessageRow(Base):
    """The conversation log; UNIQUE(account, direction, message id) is the durable dedup of inbound messages."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("account_id", "direction", "message_id"),
        Index("ix_messages_account_chat", "account_id", "chat_id", "id"),
        Index("ix_messages_account", "account_id", "id"),
        Index("ix_messages_recorded_at", "recorded_at"),
        # The engine's durable inbox: inbound rows recorded but not yet decided, or whose reply may be in flight.
        Index(
            "ix_messages_open", "account_id", "id", sqlite_where=text(OPEN_INBOUND), postgresql_where=text(OPEN_INBOUND)
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[str] = mapped_column(_account_fk())
    chat_id: Mapped[str] = mapped_column(String)
    message_id: Mapped[str] = mapped_column(String)
    direction: Mapped[str] = mapped_column(String(3))
    sender_id: Mapped[str | None] = mapped_column(String)
    sender_nick: Mapped[str | None] = mapped_column(Text)
    item_id: Mapped[str | None] = mapped_column(String)
    text: Mapped[str] = mapped_column(Text, default="")
    content_type: Mapped[str] = mapped_column(String(32), default="text")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(32))
    reply_source: Mapped[str | None] = mapped_column(String(128))
    reply_reason: Mapped[str | None] = mapped_column(Text)
    reply_to: Mapped[str | None] = mapped_column(String)
    event: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # what a replay needs beyond the columns (orders)


class ChatStateRow(Base):
    """Per-chat reply state that must survive restarts (manual-takeover pause, once-per-chat, bargaining)."""

    __tablename__ = "chat_state"

    account_id: Mapped[str] = mapped_column(_account_fk(), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String, primary_key=True)
    paused_until: Mapped[datetime | None]
    default_reply_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    bargain_rounds: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrderRow(Base):
    """An order as the platform reported it; its history is in `order_events`."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("account_id", "order_id"),
        Index("ix_orders_account", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[str] = mapped_column(_account_fk())
    order_id: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String(32))
    buyer_id: Mapped[str | None] = mapped_column(String)
    buyer_nick: Mapped[str | None] = mapped_column(Text)
    item_id: Mapped[str | None] = mapped_column(String)
    item_title: Mapped[str | None] = mapped_column(Text)
    chat_id: Mapped[str | None] = mapped_column(String)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrderEventRow(Base):
    """One status change of an order (append-only: no read-modify-write of a JSON history)."""

    __tablename__ = "order_events"
    __table_args__ = (Index("ix_order_events_order", "order_pk", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_pk: Mapped[int] = mapped_column(BigId, ForeignKey("orders.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class DeliveryRuleRow(Base):
    """What to deliver for an item: a text, a batch of unique lines, an image, or a webhook's answer."""

    __tablename__ = "delivery_rules"
    __table_args__ = (Index("ix_delivery_rules_account", "account_id", "position"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[str] = mapped_column(_account_fk())
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    item_id: Mapped[str | None] = mapped_column(String)
    title_keyword: Mapped[str | None] = mapped_column(Text)
    # The goods themselves (a text, a link, a webhook URL with its token): a secret like the stock lines.
    content_encrypted: Mapped[str | None] = mapped_column(Text)
    delay_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    reusable_on_refund: Mapped[bool] = mapped_column(Boolean, default=False)
    low_stock_threshold: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StockLineRow(Base):
    """One unique line of a batch rule (a card code, ...): available -> reserved -> delivered (or returned)."""

    __tablename__ = "stock_lines"
    __table_args__ = (
        Index("ix_stock_lines_rule_state", "rule_id", "state", "id"),
        # A line is given to at most one unit of one order, even if a caller retries after a crash.
        UniqueConstraint("rule_id", "order_id", "unit"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule_id: Mapped[int] = mapped_column(BigId, ForeignKey("delivery_rules.id", ondelete="CASCADE"))
    line_encrypted: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[str | None] = mapped_column(String)
    unit: Mapped[int | None] = mapped_column(Integer)
    reserved_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    returned_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryRow(Base):
    """One unit of one order to deliver; UNIQUE(account, order, unit) is the exactly-once guard."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("account_id", "order_id", "unit"),
        Index("ix_deliveries_due", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[str] = mapped_column(_account_fk())
    order_id: Mapped[str] = mapped_column(String)
    unit: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    rule_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("delivery_rules.id", ondelete="SET NULL"))
    stock_line_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("stock_lines.id", ondelete="SET NULL"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationSettingsRow(Base):
    """A user's own notification targets (apprise URLs carry tokens: encrypted) and the events they want."""

    __tablename__ = "notification_settings"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    urls_encrypted: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditRow(Base):
    """Who did what to which account; never a secret in `detail`. Outlives the account on purpose."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_account", "account_id", "id"),
        Index("ix_audit_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# --- scale-out (revision 0002): PostgreSQL is the coordination engine, see store/cluster.py ---------------------


class NodeRow(Base):
    """A worker node; `heartbeat_at` moves with every lease renewal, so a silent node drops out of the fair share."""

    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(default=utcnow)


class BucketLeaseRow(Base):
    """Who runs the accounts of one bucket until when; `epoch` moves with every new owner (the fencing token)."""

    __tablename__ = "bucket_leases"

    bucket: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    owner: Mapped[str | None] = mapped_column(String(128))
    epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column(default=utcnow)


class CommandRow(Base):
    """An operation for the worker that owns the account's bucket (sent by API nodes); the payload is sealed."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_pending", "bucket", "done_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    bucket: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None]
    handled_by: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
