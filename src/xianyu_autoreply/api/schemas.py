"""Request and response bodies of the REST API (DESIGN §2); OpenAPI is generated from these.

Inputs are strict about shape (unknown fields refused, numbers bounded) so that a 422 names the field the caller
got wrong. Outputs carry secrets only masked: a cookie as `cookie2=ab***cd`, an AI key as `has_api_key`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..replies import Rule, rule_data, rule_from_data
from ..store import (
    UNSET,
    Account,
    AccountSettings,
    AiSettings,
    AiSettingsUpdate,
    DeliveryRule,
    Message,
    NotificationSettings,
    Order,
    User,
)

_ID = r"^[^\s/\\?#%]{1,64}$"


def storable_text_problem(text: str) -> str | None:
    """Why no database keeps `text` faithfully (None: it can be stored): NUL (PostgreSQL rejects it: a 500 later)
    and lone surrogates (not encodable as UTF-8: SQLite fails on them). Shared by the API's bodies and the web
    admin's forms, so both doors refuse the same text with the same words."""
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


class Strict(BaseModel):
    """A request body: unknown fields are an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        """Refuse text no database keeps faithfully (`storable_text_problem`): a 422 naming the field, before any
        change."""
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and (problem := storable_text_problem(text)) is not None:
                raise ValueError(problem)
        return value


# --- auth -----------------------------------------------------------------------------------------------------


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


# --- accounts -------------------------------------------------------------------------------------------------


class AccountState(BaseModel):
    """Live engine state; `lifecycle` is `unknown` when this process runs no engine (`serve --no-engine`)."""

    lifecycle: str
    connection: str
    since: datetime | None
    last_error: str | None
    reconnects: int
    messages_in: int
    replies_out: int
    node: str | None = None  # scale-out: the worker that runs the account (None on a single node)


class AccountOut(BaseModel):
    id: str
    owner: str | None
    seller_id: str
    cookie: str = Field(description="masked: enough to recognise it, never enough to use it")
    proxy: str | None = Field(description="masked: credentials hidden")
    remark: str
    enabled: bool
    pause_minutes: float
    auto_confirm: bool
    version: int
    created_at: datetime
    updated_at: datetime
    state: AccountState

    @classmethod
    def of(cls, account: Account, state: AccountState) -> AccountOut:
        return cls(
            id=account.id,
            owner=account.owner,
            seller_id=account.seller_id,
            cookie=account.cookie_masked,
            proxy=account.proxy_masked,
            remark=account.remark,
            enabled=account.enabled,
            pause_minutes=account.pause_minutes,
            auto_confirm=account.auto_confirm,
            version=account.version,
            created_at=account.created_at,
            updated_at=account.updated_at,
            state=state,
        )


class AccountIn(Strict):
    id: str = Field(pattern=_ID, description="your name for the account: 1-64 characters, no spaces or / ? # %")
    cookie: str = Field(min_length=1, max_length=16384, description="the browser cookie string of the seller")
    enabled: bool = True
    remark: str = Field(default="", max_length=500)
    proxy: str | None = Field(default=None, max_length=2048)
    owner: str | None = Field(default=None, description="admin only: the owning user (default: the caller)")


class AccountPatch(Strict):
    """Only the fields given change; `proxy: null` removes the proxy."""

    remark: str | None = Field(default=None, max_length=500)
    pause_minutes: float | None = Field(default=None, ge=0, le=100_000)
    auto_confirm: bool | None = None
    proxy: str | None = Field(default=None, max_length=2048)
    owner: str | None = Field(default=None, description="admin only")


class CookieIn(Strict):
    cookie: str = Field(min_length=1, max_length=16384)


class StatusIn(Strict):
    enabled: bool


class BulkIn(Strict):
    action: Literal["enable", "disable", "delete"]
    ids: list[str] = Field(min_length=1, max_length=1000)


class BulkResult(BaseModel):
    id: str
    ok: bool
    code: str | None = None
    message: str | None = None


class BulkOut(BaseModel):
    action: str
    results: list[BulkResult]


# --- rules and settings ---------------------------------------------------------------------------------------


class RuleIO(Strict):
    keyword: str = Field(min_length=1, max_length=500)
    reply: str = Field(max_length=5000)
    match: Literal["contains", "exact", "regex"] = "contains"
    item_id: str | None = Field(default=None, max_length=64)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    kind: Literal["text", "image"] = "text"
    id: str | None = Field(default=None, min_length=1, max_length=64)

    def to_rule(self) -> Rule:
        return rule_from_data({**self.model_dump(), "item_id": self.item_id or None})

    @classmethod
    def of(cls, rule: Rule) -> RuleIO:
        return cls.model_validate(rule_data(rule))


class AiIn(Strict):
    """AI settings to save; `api_key` is write-only: left out keeps the stored key, null or "" removes it."""

    enabled: bool = False
    base_url: str | None = Field(default=None, max_length=2048)
    model: str = Field(default="", max_length=200)
    api_key: str | None = Field(default=None, max_length=4096)
    max_discount_percent: float = Field(default=10.0, ge=0, le=100)
    max_discount_amount: float = Field(default=100.0, ge=0, le=1e9)
    max_bargain_rounds: int = Field(default=3, ge=0, le=100)
    prompt: str = Field(default="", max_length=20000)


class AiOut(BaseModel):
    enabled: bool
    base_url: str | None
    model: str
    has_api_key: bool
    api_key_masked: str | None
    max_discount_percent: float
    max_discount_amount: float
    max_bargain_rounds: int
    prompt: str

    @classmethod
    def of(cls, ai: AiSettings) -> AiOut:
        return cls.model_validate(ai, from_attributes=True)


class SettingsIn(Strict):
    """Reply settings, replaced whole; `ai` left out keeps the AI settings as they are."""

    default_reply: str = Field(default="", max_length=5000)
    default_reply_once_per_chat: bool = False
    auto_confirm: bool = False
    pause_minutes: float = Field(default=10.0, ge=0, le=100_000)
    debounce_seconds: float = Field(default=0.0, ge=0, le=3600)
    ai: AiIn | None = None

    def to_store(self) -> tuple[AccountSettings, AiSettingsUpdate | None]:
        """The store's records to save: the settings, and the AI settings (None: left as they are)."""
        settings = AccountSettings(**self.model_dump(exclude={"ai"}))
        if self.ai is None:
            return settings, None
        key = UNSET if "api_key" not in self.ai.model_fields_set else (self.ai.api_key or None)
        fields = self.ai.model_dump(exclude={"api_key", "base_url"})
        return settings, AiSettingsUpdate(**fields, base_url=self.ai.base_url or None, api_key=key)


class SettingsOut(BaseModel):
    default_reply: str
    default_reply_once_per_chat: bool
    auto_confirm: bool
    pause_minutes: float
    debounce_seconds: float
    ai: AiOut

    @classmethod
    def of(cls, settings: AccountSettings, ai: AiSettings) -> SettingsOut:
        return cls(**asdict(settings), ai=AiOut.of(ai))


# --- conversation, try, manual reply --------------------------------------------------------------------------


class MessageOut(BaseModel):
    id: int
    chat_id: str
    message_id: str
    direction: str
    sender_id: str | None
    sender_nick: str | None
    item_id: str | None
    text: str
    content_type: str
    created_ms: int
    status: str
    reply_source: str | None = Field(description="for a reply: `rule:<id>`, `default`, `ai`, `manual`, ...")
    reply_reason: str | None
    reply_to: str | None

    @classmethod
    def of(cls, m: Message) -> MessageOut:
        return cls(
            id=m.id,
            chat_id=m.chat_id,
            message_id=m.message_id,
            direction=str(m.direction),
            sender_id=m.sender_id,
            sender_nick=m.sender_nick,
            item_id=m.item_id,
            text=m.text,
            content_type=m.content_type,
            created_ms=m.created_ms,
            status=m.status,
            reply_source=m.reply_source,
            reply_reason=m.reply_reason,
            reply_to=m.reply_to,
        )


class TryIn(Strict):
    text: str = Field(min_length=1, max_length=5000)
    item_id: str | None = Field(default=None, max_length=64)


class TryOut(BaseModel):
    reply: str | None
    source: str
    reason: str


class ChatMessageIn(Strict):
    text: str = Field(min_length=1, max_length=5000)
    to_user: str | None = Field(
        default=None, max_length=64, description="the buyer's user id; found from the chat's log when left out"
    )


class ChatMessageOut(BaseModel):
    chat_id: str
    to_user: str
    text: str
    ok: bool
    error: str | None


# --- orders and delivery --------------------------------------------------------------------------------------


class DeliveryOut(BaseModel):
    state: str
    rule: int | None
    at: datetime
    error: str | None
    attempts: int
    unit: int


class OrderOut(BaseModel):
    order_id: str
    status: str
    buyer: str | None
    buyer_nick: str | None
    item_id: str | None
    item_title: str | None
    chat_id: str | None
    quantity: int
    created_at: datetime
    updated_at: datetime
    delivery: DeliveryOut | None
    deliveries: list[DeliveryOut]
    history: list[dict[str, Any]]

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        deliveries = [
            DeliveryOut(
                state=str(d.state), rule=d.rule_id, at=d.updated_at, error=d.error, attempts=d.attempts, unit=d.unit
            )
            for d in order.deliveries
        ]
        return cls(
            order_id=order.order_id,
            status=order.status,
            buyer=order.buyer_id,
            buyer_nick=order.buyer_nick,
            item_id=order.item_id,
            item_title=order.item_title,
            chat_id=order.chat_id,
            quantity=order.quantity,
            created_at=order.created_at,
            updated_at=order.updated_at,
            delivery=max(deliveries, key=lambda d: d.at) if deliveries else None,
            deliveries=deliveries,
            history=[{"at": e.at.isoformat(), "status": e.status, "detail": dict(e.detail)} for e in order.history],
        )


class StockOut(BaseModel):
    available: int
    reserved: int
    delivered: int
    returned: int


class DeliveryRuleIn(Strict):
    """A delivery rule to save; `id` keeps an existing rule and its stock, `lines` (batch only) replaces the
    available stock, `content` left out on an existing rule keeps its content."""

    id: int | None = Field(default=None, ge=1, le=2**62)
    item_id: str | None = Field(default=None, max_length=64)
    title_keyword: str | None = Field(default=None, max_length=200)
    kind: Literal["text", "batch", "image", "webhook"]
    content: str | None = Field(default=None, max_length=20000)
    lines: list[str] | None = Field(default=None, max_length=100_000)
    delay_seconds: float = Field(default=0.0, ge=0, le=86_400)
    reusable_on_refund: bool = False
    low_stock_threshold: int = Field(default=0, ge=0, le=1_000_000)
    enabled: bool = True


class DeliveryRuleOut(BaseModel):
    id: int
    item_id: str | None
    title_keyword: str | None
    kind: str
    delay_seconds: float
    reusable_on_refund: bool
    low_stock_threshold: int
    enabled: bool
    has_content: bool
    stock: StockOut
    low_stock: bool
    content: str | None = Field(default=None, description="only with ?reveal=true, for the owner")
    lines: list[str] | None = Field(default=None, description="remaining stock; only with ?reveal=true")

    @classmethod
    def of(cls, rule: DeliveryRule) -> DeliveryRuleOut:
        return cls(
            id=rule.id,
            item_id=rule.item_id,
            title_keyword=rule.title_keyword,
            kind=str(rule.kind),
            delay_seconds=rule.delay_seconds,
            reusable_on_refund=rule.reusable_on_refund,
            low_stock_threshold=rule.low_stock_threshold,
            enabled=rule.enabled,
            has_content=rule.has_content,
            stock=StockOut(
                available=rule.stock.available,
                reserved=rule.stock.reserved,
                delivered=rule.stock.delivered,
                returned=rule.stock.returned,
            ),
            low_stock=rule.low_stock,
            content=rule.content,
            lines=list(rule.lines) if rule.lines is not None else None,
        )


# --- users and notifications ----------------------------------------------------------------------------------


class UserIn(Strict):
    username: str = Field(pattern=_ID)
    password: str = Field(min_length=8, max_length=256)
    role: Literal["admin", "user"] = "user"


class UserPatch(Strict):
    password: str | None = Field(default=None, min_length=8, max_length=256)
    role: Literal["admin", "user"] | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    username: str
    role: str
    disabled: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        locked = user.locked_until if user.locked_until and user.locked_until > datetime.now(UTC) else None
        return cls(
            username=user.username,
            role=str(user.role),
            disabled=user.disabled,
            locked_until=locked,
            last_login_at=user.last_login_at,
            created_at=user.created_at,
        )


class NotificationsIn(Strict):
    urls: list[str] = Field(default_factory=list, max_length=20, description="apprise URLs")
    events: list[str] = Field(default_factory=list, max_length=50)


class NotificationsOut(BaseModel):
    urls: list[str] = Field(description="masked to their scheme unless ?reveal=true")
    events: list[str]

    @classmethod
    def of(cls, settings: NotificationSettings) -> NotificationsOut:
        return cls(urls=list(settings.urls_masked), events=list(settings.events))
