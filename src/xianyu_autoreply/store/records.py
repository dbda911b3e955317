"""What the store hands out and takes in: frozen dataclasses, never ORM objects.

Records that carry a decrypted secret say so in their name (`AccountSecrets`, `ReservedLine`, ...) and keep the
secret out of `repr`, so that logging a record never logs a cookie. A keyword rule is `replies.Rule`, the one
shape every layer shares; the store saves and returns it as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from .errors import InvalidValue

MAX_ACCOUNT_ID = 64


class Unset(enum.Enum):
    """Marks an argument that was not given (None is a value: "clear the proxy")."""

    UNSET = enum.auto()


UNSET = Unset.UNSET


class Role(enum.StrEnum):
    ADMIN = "admin"
    USER = "user"


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class DeliveryKind(enum.StrEnum):
    TEXT = "text"
    BATCH = "batch"
    IMAGE = "image"
    WEBHOOK = "webhook"


class StockState(enum.StrEnum):
    AVAILABLE = "available"
    RESERVED = "reserved"
    DELIVERED = "delivered"
    RETURNED = "returned"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # claimed, or an attempt preparing its goods (nothing has left yet)
    SENDING = "sending"  # the goods are on the wire: a crash now cannot know whether the buyer got them
    SENT = "sent"
    FAILED = "failed"  # will be retried at `next_attempt_at`
    DELIVERY_FAILED = "delivery_failed"  # gave up; visible to the seller with its reason


E = TypeVar("E", bound=enum.StrEnum)


def coerce(enum_type: type[E], value: str, what: str) -> E:
    """A string as one of the enum's values, or `InvalidValue` naming the field."""
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_type)
        raise InvalidValue(f"{what} must be one of {allowed}, not {value!r}") from None


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: Role
    disabled: bool
    failed_logins: int
    locked_until: datetime | None
    last_login_at: datetime | None
    token_version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class UserCredentials:
    """For the login check only: the stored argon2 hash beside the user."""

    user: User
    password_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Account:
    """An account as anyone may see it: the cookie and proxy masked."""

    id: str
    owner: str | None
    seller_id: str
    cookie_masked: str
    proxy_masked: str | None
    remark: str
    enabled: bool
    pause_minutes: float
    auto_confirm: bool
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AccountSecrets:
    """What a session needs to connect: the decrypted cookie and proxy, at a version."""

    id: str
    version: int
    enabled: bool
    cookie: str = field(repr=False)
    proxy: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """Reply settings of an account (the account-row fields pause_minutes and auto_confirm included)."""

    default_reply: str = ""
    default_reply_once_per_chat: bool = False
    debounce_seconds: float = 0.0
    pause_minutes: float = 10.0
    auto_confirm: bool = False

    def __post_init__(self) -> None:
        if self.debounce_seconds < 0 or self.pause_minutes < 0:
            raise InvalidValue("debounce_seconds and pause_minutes cannot be negative")


@dataclass(frozen=True, slots=True)
class AiSettings:
    """AI settings as shown: the API key only as `has_api_key` and its last characters."""

    enabled: bool
    base_url: str | None
    model: str
    max_discount_percent: float
    max_discount_amount: float
    max_bargain_rounds: int
    prompt: str
    has_api_key: bool
    api_key_masked: str | None


@dataclass(frozen=True, slots=True)
class AiSettingsUpdate:
    """AI settings to save. `api_key`: UNSET keeps the stored key, None or "" removes it, text replaces it."""

    enabled: bool = False
    base_url: str | None = None
    model: str = ""
    max_discount_percent: float = 10.0
    max_discount_amount: float = 100.0
    max_bargain_rounds: int = 3
    prompt: str = ""
    api_key: str | Unset | None = field(default=UNSET, repr=False)

    def __post_init__(self) -> None:
        if self.max_discount_percent < 0 or self.max_discount_amount < 0 or self.max_bargain_rounds < 0:
            raise InvalidValue("discount limits and bargain rounds cannot be negative")


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    account_id: str
    chat_id: str
    message_id: str
    direction: Direction
    sender_id: str | None
    sender_nick: str | None
    item_id: str | None
    text: str
    content_type: str
    created_ms: int
    recorded_at: datetime
    status: str
    reply_source: str | None
    reply_reason: str | None
    reply_to: str | None
    event: dict[str, Any] | None = None  # what a replay needs beyond the columns (an order card's id and status)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One item of a push as the log records it before the push is acknowledged (`Store.record_inbound`)."""

    message_id: str
    chat_id: str
    created_ms: int
    text: str = ""
    content_type: str = "text"
    sender_id: str | None = None
    sender_nick: str | None = None
    item_id: str | None = None
    status: str = "received"
    event: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message our side sent (a reply or a manual message) as the log records it (`Store.record_outbound`)."""

    message_id: str
    _: KW_ONLY
    chat_id: str
    text: str
    created_ms: int
    content_type: str = "text"
    reply_source: str | None = None
    reply_reason: str | None = None
    reply_to: str | None = None
    status: str = "sent"
    sender_id: str | None = None
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatSummary:
    """One conversation of an account: its last message and how many were logged."""

    chat_id: str
    last_message: Message
    message_count: int


@dataclass(frozen=True, slots=True)
class ChatState:
    account_id: str
    chat_id: str
    paused_until: datetime | None = None
    default_reply_sent: bool = False
    bargain_rounds: int = 0


@dataclass(frozen=True, slots=True)
class OrderEvent:
    at: datetime
    status: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    account_id: str
    order_id: str
    unit: int
    state: DeliveryState
    rule_id: int | None
    stock_line_id: int | None
    attempts: int
    error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Order:
    account_id: str
    order_id: str
    status: str
    buyer_id: str | None
    buyer_nick: str | None
    item_id: str | None
    item_title: str | None
    chat_id: str | None
    quantity: int
    created_at: datetime
    updated_at: datetime
    history: tuple[OrderEvent, ...] = ()
    deliveries: tuple[Delivery, ...] = ()


@dataclass(frozen=True, slots=True)
class OrderChange:
    """The order after an event, and its status before it (None: the order is new)."""

    order: Order
    previous_status: str | None

    @property
    def status_changed(self) -> bool:
        return self.previous_status != self.order.status


@dataclass(frozen=True, slots=True)
class StockCount:
    available: int = 0
    reserved: int = 0
    delivered: int = 0
    returned: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryRule:
    """A delivery rule as listed; `content` and `lines` are filled only when revealed."""

    id: int
    account_id: str
    position: int
    kind: DeliveryKind
    item_id: str | None
    title_keyword: str | None
    delay_seconds: float
    reusable_on_refund: bool
    low_stock_threshold: int
    enabled: bool
    has_content: bool
    stock: StockCount
    content: str | None = field(default=None, repr=False)
    lines: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def low_stock(self) -> bool:
        return self.kind is DeliveryKind.BATCH and self.stock.available <= self.low_stock_threshold


@dataclass(frozen=True, slots=True)
class DeliveryRuleSpec:
    """A delivery rule to save. `id` keeps an existing rule (and its stock); `lines` None keeps the stock,
    a list becomes the rule's available lines (reserved, delivered and returned lines are never touched)."""

    kind: DeliveryKind | str
    _: KW_ONLY
    id: int | None = None
    item_id: str | None = None
    title_keyword: str | None = None
    content: str | None = field(default=None, repr=False)
    lines: tuple[str, ...] | list[str] | None = field(default=None, repr=False)
    delay_seconds: float = 0.0
    reusable_on_refund: bool = False
    low_stock_threshold: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", coerce(DeliveryKind, self.kind, "kind"))
        if self.delay_seconds < 0 or self.low_stock_threshold < 0:
            raise InvalidValue("delay_seconds and low_stock_threshold cannot be negative")
        if self.lines is not None:
            if self.kind is not DeliveryKind.BATCH:
                raise InvalidValue("only a batch rule has stock lines")
            object.__setattr__(self, "lines", tuple(line for line in self.lines if line.strip()))


@dataclass(frozen=True, slots=True)
class ReservedLine:
    """A stock line reserved for one unit of an order; `content` is the goods, decrypted to be sent."""

    id: int
    rule_id: int
    order_id: str
    unit: int
    state: StockState
    content: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NotificationSettings:
    """A user's notification settings as shown: each URL reduced to its scheme."""

    username: str
    urls_masked: tuple[str, ...]
    events: tuple[str, ...]
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    account_id: str | None
    action: str
    detail: Mapping[str, Any]
