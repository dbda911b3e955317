"""What the admin's pages show, built from the store and the engine: account rows, chat lines, today's counts.

Kept apart from the routes so that the page handlers and the live event stream render the very same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select

from ...engine.events import Event, MessageIn, ReplyFailed, ReplySent
from ...engine.scheduler import AccountScheduler, AccountState, Lifecycle
from ...protocol import now_ms
from ...store import Account, AccountNotFound, Direction, Message, Role, Store, User
from ...store.models import MessageRow
from .i18n import Translator
from .rendering import since_text


def dom_key(*parts: str) -> str:
    """A short id for an account (or chat) usable in element ids and SSE event names, whatever its characters."""
    return hashlib.sha1("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


def can_see(user: User, account: Account) -> bool:
    """An admin sees every account, a user only their own (DESIGN §2: no existence leak elsewhere)."""
    return user.role is Role.ADMIN or account.owner == user.username


async def visible_accounts(store: Store, user: User) -> list[Account]:
    """Every account for an admin, the user's own otherwise."""
    if user.role is Role.ADMIN:
        return await store.list_accounts()
    return await store.list_accounts(owner=user.username)


async def account_for(store: Store, user: User, account_id: str) -> Account:
    """The account if this user may see it; `AccountNotFound` either way otherwise."""
    account = await store.get_account(account_id)
    if not can_see(user, account):
        raise AccountNotFound(account_id)
    return account


def engine_state(engine: AccountScheduler | None, account_id: str) -> AccountState:
    """The engine's live state, or a stopped one for an account this node does not run (or without engine)."""
    if engine is None:
        return AccountState(account_id, Lifecycle.STOPPED, "disconnected", now_ms(), None, 0, 0, 0, 0)
    try:
        return engine.state(account_id)
    except AccountNotFound:
        return AccountState(account_id, Lifecycle.STOPPED, "disconnected", now_ms(), None, 0, 0, 0, 0)


def start_of_today() -> datetime:
    """Local midnight, in UTC (the log's timestamps are UTC): "today" is the seller's day, not Greenwich's."""
    local = datetime.now().astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TodayCounts:
    """Buyer messages and sent replies since local midnight."""

    messages: int = 0
    replies: int = 0


async def today_counts(store: Store, account_ids: Sequence[str]) -> dict[str, TodayCounts]:
    """Buyer messages received and replies sent today, per account, in one grouped query.

    The store has no such aggregate (the API shows engine counters since start); the dashboard promises
    "today", which must survive a restart, so it is counted from the conversation log.
    """
    if not account_ids:
        return {}
    statement = (
        select(MessageRow.account_id, MessageRow.direction, func.count())
        .where(MessageRow.account_id.in_(list(account_ids)), MessageRow.recorded_at >= start_of_today())
        .where((MessageRow.direction == Direction.IN.value) | (MessageRow.status == "sent"))
        .group_by(MessageRow.account_id, MessageRow.direction)
    )
    counts: dict[str, dict[str, int]] = {}
    async with store.db.read() as session:
        for account_id, direction, n in (await session.execute(statement)).all():
            counts.setdefault(account_id, {})[direction] = int(n)
    return {
        account_id: TodayCounts(
            messages=counts.get(account_id, {}).get(Direction.IN.value, 0),
            replies=counts.get(account_id, {}).get(Direction.OUT.value, 0),
        )
        for account_id in account_ids
    }


@dataclass(frozen=True, slots=True)
class AccountRow:
    """One dashboard row."""

    account: Account
    state: AccountState
    messages_today: int
    replies_today: int
    key: str
    since_text: str
    since_iso: str


async def account_rows(store: Store, engine: AccountScheduler | None, accounts: Iterable[Account]) -> list[AccountRow]:
    """Dashboard rows for `accounts`: engine state plus today's counts (one query for all)."""
    accounts = list(accounts)
    counts = await today_counts(store, [a.id for a in accounts])
    rows = []
    for account in accounts:
        state = engine_state(engine, account.id)
        short, iso = since_text(state.since_ms)
        today = counts.get(account.id, TodayCounts())
        rows.append(AccountRow(account, state, today.messages, today.replies, dom_key(account.id), short, iso))
    return rows


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One message as the conversation view shows it."""

    direction: str  # "in" or "out"
    text: str
    who: str
    when: str
    source: str | None = None
    source_label: str | None = None
    reason: str | None = None
    status: str | None = None


def source_label(source: str | None, t: Translator, rule_names: Mapping[str, str] | None = None) -> str | None:
    """`rule:<id>` -> 关键词规则「价格」, `default` -> 默认回复, ...; unknown sources are shown as they are."""
    if not source:
        return None
    head, _, rest = source.partition(":")
    label = t(f"source.{head}")
    if label == f"source.{head}":
        return source
    if head == "rule" and rule_names and rest in rule_names:
        return f"{label}「{rule_names[rest]}」"
    return f"{label} {rest}".strip() if rest else label


async def rule_names(store: Store, account_id: str) -> dict[str, str]:
    """Rule id -> keyword, so a reply's source reads as the keyword the seller wrote, not a generated id."""
    return {rule.id: rule.keyword for rule in await store.get_rules(account_id) if rule.id}


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone().strftime("%m-%d %H:%M:%S")


def is_own_echo(message: Message) -> bool:
    """The platform's copy of a reply we sent: logged for dedup, but the outbound entry already shows it."""
    return message.reply_reason == "own_echo"


def message_line(
    message: Message, *, seller_id: str, t: Translator, rules: Mapping[str, str] | None = None
) -> ChatLine:
    """A logged message as a chat line; our replies and the seller's own messages are outbound."""
    outbound = message.direction is Direction.OUT or (message.sender_id is not None and message.sender_id == seller_id)
    if outbound:
        who = t("chat.seller") if message.reply_source in (None, "manual") else t("chat.auto")
        source = message.reply_source if message.direction is Direction.OUT else None
        reason = None
    else:
        who = message.sender_nick or message.sender_id or t("chat.buyer")
        source = None  # an inbound entry's source is its answer's; the answer's own line shows it
        reason = message.reply_reason if message.status not in ("replied", "received") else None
    return ChatLine(
        direction="out" if outbound else "in",
        text=message.text,
        who=who,
        when=_clock(message.created_ms),
        source=source,
        source_label=source_label(source, t, rules),
        reason=reason,
        status=message.status,
    )


def event_line(event: Event, t: Translator, rules: Mapping[str, str] | None = None) -> ChatLine | None:
    """A live `message.in` / `reply.sent` / `reply.failed` event as a chat line (None for other kinds)."""
    if isinstance(event, MessageIn):
        if event.own:
            # Mostly the platform's echo of a reply whose own `reply.sent` line is shown; the event cannot tell
            # an echo from a message the seller typed elsewhere, which the page shows when loaded again.
            return None
        return ChatLine(
            direction="in",
            text=event.text,
            who=event.sender or t("chat.buyer"),
            when=_clock(event.at_ms),
        )
    if isinstance(event, ReplySent | ReplyFailed):
        source = event.source or None
        return ChatLine(
            direction="out",
            text=event.text,
            who=t("chat.seller") if source in (None, "manual") else t("chat.auto"),
            when=_clock(event.at_ms),
            source=source,
            source_label=source_label(source, t, rules),
            status="failed" if isinstance(event, ReplyFailed) else "sent",
        )
    return None


def buyer_of(messages: Sequence[Message], *, seller_id: str) -> str | None:
    """Whom a manual reply in this chat goes to: the latest sender who is not the seller."""
    for message in reversed(messages):
        if message.direction is Direction.IN and message.sender_id and message.sender_id != seller_id:
            return message.sender_id
    return None
