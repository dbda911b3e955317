"""The reply policy: one pure function from an event to a decision with its reason.

`decide(event, state=..., settings=..., now_ms=..., rules=...)` checks, in this order (issue 5 §3):

1. not a chat message (typing, unknown payload)              -> none, `not_a_message`
2. order cards, system notices and the texts of PROTOCOL §12 -> none, `system_message`
3. older than `message_expire_seconds` when it arrives       -> none, `expired` (recorded as seen)
4. a message id already handled                              -> none, `duplicate`
5. a seller message: the echo of what we sent                -> none, `own_echo` (does NOT pause)
   otherwise the seller typed it elsewhere                   -> none, `manual_takeover`, chat paused for
                                                                `pause_minutes` (0 = never pause)
6. a chat paused by a takeover                               -> none, `paused`
7. `debounce_seconds` > 0                                    -> wait, `debounce_wait`: answer at `wait_until_ms`
                                                                through `resolve_wait`, only if no newer
                                                                message arrived in the chat (`debounced`)
8. the first matching rule                                   -> reply, `rule_matched`, source `rule:<id>`
9. AI enabled                                                -> ask_ai with the query; `fallback` is what to
                                                                send if the AI fails (`ai_failed`)
10. the default reply                                        -> reply, `default_reply`, source `default`
    (once per chat when so set: `default_once_per_chat_used`), or none, `no_match`

State: the policy never changes anything. Every decision lists its `changes`; the caller applies them with
`ReplyState.apply` right after deciding, with no `await` in between, so that two messages handled concurrently
see each other (the second one is then a duplicate, or supersedes the first in a debounce). `ReplyState` is the
one mutable object here and only `apply` mutates it. After sending, the caller applies `record_sent(...)` so the
platform's echo of the reply is recognised (PROTOCOL §13.1) instead of pausing the chat.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..protocol.events import (
    BuyerMessage,
    ChatMessage,
    Event,
    OrderEvent,
    SellerMessage,
    SystemNotice,
)
from ..protocol.notices import ORDER_STATUS_BY_TEXT, is_system_text
from .bargain import is_bargaining
from .memory import SeenMessages, SentText, SentTexts
from .prompt import AIQuery, ChatFacts
from .rules import ReplyKind, RuleIndex
from .settings import ReplySettings
from .templates import TemplateError, TemplateValues, render

# What the platform shows for an image we sent; an image echo is recognised by it or by the message id (inferred).
IMAGE_ECHO_TEXT = "[图片]"
# Slack on top of the expiry window while remembering message ids: clocks of the platform and ours differ.
_SEEN_SLACK_MS = 600_000
# How many chats remember their one default reply (per account); beyond it the oldest chat may get it again.
DEFAULT_SENT_CHATS = 100_000


class Action(enum.StrEnum):
    """What the caller does with a message."""

    REPLY = "reply"  # send `Decision.reply`
    NONE = "none"  # send nothing
    ASK_AI = "ask_ai"  # ask the AI with `Decision.ai_query`; on failure use `Decision.fallback`
    WAIT = "wait"  # sleep until `Decision.wait_until_ms`, then call `resolve_wait`


class Reason(enum.StrEnum):
    """Why a decision was taken; recorded in the conversation log next to the message."""

    NOT_A_MESSAGE = "not_a_message"
    SYSTEM_MESSAGE = "system_message"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    OWN_ECHO = "own_echo"
    MANUAL_TAKEOVER = "manual_takeover"
    PAUSED = "paused"
    DEBOUNCE_WAIT = "debounce_wait"
    DEBOUNCED = "debounced"
    RULE_MATCHED = "rule_matched"
    ASK_AI = "ask_ai"
    AI_FAILED = "ai_failed"
    DEFAULT_REPLY = "default_reply"
    DEFAULT_ONCE_PER_CHAT_USED = "default_once_per_chat_used"
    NO_MATCH = "no_match"
    EMPTY_REPLY = "empty_reply"
    INVALID_TEMPLATE = "invalid_template"


# --- state changes: data the policy returns and `ReplyState.apply` carries out ---------------------------------


@dataclass(frozen=True, slots=True)
class MarkSeen:
    """Remember a message as handled (de-duplication)."""

    key: str


@dataclass(frozen=True, slots=True)
class PauseChat:
    """Stop auto-replies in a chat until `until_ms` (manual takeover)."""

    chat_id: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class ConsumeEcho:
    """The echo of a sent message arrived: forget that message."""

    chat_id: str
    sent: SentText


@dataclass(frozen=True, slots=True)
class AwaitDebounce:
    """This message is now the latest of its chat's burst, to be answered at `until_ms` if still the latest."""

    chat_id: str
    key: str
    until_ms: int


@dataclass(frozen=True, slots=True)
class ClearDebounce:
    """A burst was resolved."""

    chat_id: str
    key: str


@dataclass(frozen=True, slots=True)
class MarkDefaultSent:
    """The default reply went to this chat (for "once per chat")."""

    chat_id: str


@dataclass(frozen=True, slots=True)
class CountBargainRound:
    """The buyer haggled once more in this chat."""

    chat_id: str


@dataclass(frozen=True, slots=True)
class RecordSent:
    """We sent this into a chat; its echo is expected (build it with `record_sent`)."""

    chat_id: str
    text: str
    uuid: str | None


Change = (
    MarkSeen
    | PauseChat
    | ConsumeEcho
    | AwaitDebounce
    | ClearDebounce
    | MarkDefaultSent
    | CountBargainRound
    | RecordSent
)


class ReplyState:
    """What the policy remembers for one account. Mutable, but only through `apply`; `decide` only reads it.

    The sizes bound memory for accounts that run for months; see `memory.py` for why forgetting old message ids
    cannot let a message be answered twice.
    """

    __slots__ = ("bargain_rounds", "debouncing", "default_sent", "paused_until", "seen", "sent")

    def __init__(self, *, settings: ReplySettings | None = None, seen_capacity: int = 50_000) -> None:
        """`seen_capacity=0` when the caller already drops duplicates durably before `decide` (the engine's claim
        in the database): the policy then keeps no message ids at all, instead of a second copy of that guard."""
        expire_ms = int((settings or ReplySettings()).message_expire_seconds * 1000)
        self.seen = SeenMessages(capacity=seen_capacity, ttl_ms=max(expire_ms, 0) + _SEEN_SLACK_MS)
        self.sent = SentTexts()
        self.paused_until: dict[str, int] = {}
        # Chats that had their one default reply (`default_reply_once_per_chat`); a dict as an insertion-ordered
        # set, so that the oldest chats are forgotten first beyond `DEFAULT_SENT_CHATS`.
        self.default_sent: dict[str, None] = {}
        self.bargain_rounds: dict[str, int] = {}
        self.debouncing: dict[str, tuple[str, int]] = {}

    def is_paused(self, chat_id: str, *, now_ms: int) -> bool:
        """True while a manual takeover pauses auto-replies in the chat."""
        return self.paused_until.get(chat_id, 0) > now_ms

    def apply(self, changes: tuple[Change, ...] | list[Change], *, now_ms: int) -> None:
        """Carry out a decision's changes (and drop pauses and waits that are over)."""
        for change in changes:
            match change:
                case MarkSeen(key):
                    self.seen.remember(key, now_ms=now_ms)
                case PauseChat(chat_id, until_ms):
                    self.paused_until[chat_id] = max(until_ms, self.paused_until.get(chat_id, 0))
                case ConsumeEcho(chat_id, sent):
                    self.sent.consume(chat_id, sent, now_ms=now_ms)
                case AwaitDebounce(chat_id, key, until_ms):
                    self.debouncing[chat_id] = (key, until_ms)
                case ClearDebounce(chat_id, key):
                    if self.debouncing.get(chat_id, ("", 0))[0] == key:
                        del self.debouncing[chat_id]
                case MarkDefaultSent(chat_id):
                    self.default_sent[chat_id] = None
                    if len(self.default_sent) > DEFAULT_SENT_CHATS:
                        del self.default_sent[next(iter(self.default_sent))]
                case CountBargainRound(chat_id):
                    self.bargain_rounds[chat_id] = self.bargain_rounds.get(chat_id, 0) + 1
                case RecordSent(chat_id, text, uuid):
                    self.sent.record(chat_id, text=text, uuid=uuid, now_ms=now_ms)
        self._prune(now_ms)

    def _prune(self, now_ms: int) -> None:
        for chat_id in [c for c, until in self.paused_until.items() if until <= now_ms]:
            del self.paused_until[chat_id]
        # A wait whose caller vanished (the session stopped) is dropped a minute after it was due.
        for chat_id in [c for c, (_, until) in self.debouncing.items() if until + 60_000 <= now_ms]:
            del self.debouncing[chat_id]


# --- decisions --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutgoingReply:
    """A reply to send: a rendered text, or an image URL."""

    text: str
    kind: ReplyKind = ReplyKind.TEXT


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one event: what to do, where the reply comes from and why."""

    action: Action
    reason: Reason
    source: str = "none"  # "rule:<id>" | "ai" | "default" | "none"
    reply: OutgoingReply | None = None
    changes: tuple[Change, ...] = ()
    wait_until_ms: int | None = None
    ai_query: AIQuery | None = None
    fallback: Decision | None = None

    @property
    def paused_until_ms(self) -> int | None:
        """When a manual takeover pauses the chat, until when."""
        return next((c.until_ms for c in self.changes if isinstance(c, PauseChat)), None)


def message_key(message: ChatMessage) -> str:
    """The de-duplication key: the platform message id, else chat id + create time + text (DESIGN §3)."""
    return message.message_id or f"{message.chat_id}:{message.created_ms}:{message.text}"


def record_sent(chat_id: str, reply: OutgoingReply, *, uuid: str | None = None) -> tuple[Change, ...]:
    """The changes to apply once a reply was sent, so that its echo is not taken for a manual takeover."""
    text = reply.text if reply.kind is ReplyKind.TEXT else IMAGE_ECHO_TEXT
    return (RecordSent(chat_id, text, uuid),)


def decide(
    event: Event,
    *,
    state: ReplyState,
    settings: ReplySettings,
    now_ms: int,
    rules: RuleIndex,
    facts: ChatFacts | None = None,
) -> Decision:
    """Decide what to do with one decoded event (see the module docstring for the order of the checks)."""
    if isinstance(event, OrderEvent | SystemNotice):
        return Decision(Action.NONE, Reason.SYSTEM_MESSAGE)
    if not isinstance(event, ChatMessage):
        return Decision(Action.NONE, Reason.NOT_A_MESSAGE)
    stripped = event.text.strip()
    if is_system_text(stripped) or stripped in ORDER_STATUS_BY_TEXT:
        return Decision(Action.NONE, Reason.SYSTEM_MESSAGE)
    key = message_key(event)
    seen = (MarkSeen(key),)
    if now_ms - event.created_ms > settings.message_expire_seconds * 1000:
        return Decision(Action.NONE, Reason.EXPIRED, changes=seen)
    if state.seen.contains(key, now_ms=now_ms):
        return Decision(Action.NONE, Reason.DUPLICATE)
    if isinstance(event, SellerMessage):
        echo = state.sent.find_echo(event.chat_id, text=event.text, message_id=event.message_id, now_ms=now_ms)
        if echo is not None:
            return Decision(Action.NONE, Reason.OWN_ECHO, changes=(*seen, ConsumeEcho(event.chat_id, echo)))
        pause: tuple[Change, ...] = ()
        if settings.pause_minutes > 0:
            pause = (PauseChat(event.chat_id, now_ms + int(settings.pause_minutes * 60_000)),)
        return Decision(Action.NONE, Reason.MANUAL_TAKEOVER, changes=(*seen, *pause))
    if state.is_paused(event.chat_id, now_ms=now_ms):
        return Decision(Action.NONE, Reason.PAUSED, changes=seen)
    if settings.debounce_seconds > 0:
        until = now_ms + int(settings.debounce_seconds * 1000)
        return Decision(
            Action.WAIT,
            Reason.DEBOUNCE_WAIT,
            changes=(*seen, AwaitDebounce(event.chat_id, key, until)),
            wait_until_ms=until,
        )
    return _answer(event, state=state, settings=settings, rules=rules, facts=facts, changes=seen)


def resolve_wait(
    event: BuyerMessage,
    *,
    state: ReplyState,
    settings: ReplySettings,
    now_ms: int,
    rules: RuleIndex,
    facts: ChatFacts | None = None,
) -> Decision:
    """After a debounce wait: answer `event` if it is still the last message of its chat, else nothing."""
    key = message_key(event)
    latest = state.debouncing.get(event.chat_id)
    if latest is None or latest[0] != key:
        return Decision(Action.NONE, Reason.DEBOUNCED)
    done = (ClearDebounce(event.chat_id, key),)
    # The seller may have taken over while we waited.
    if state.is_paused(event.chat_id, now_ms=now_ms):
        return Decision(Action.NONE, Reason.PAUSED, changes=done)
    return _answer(event, state=state, settings=settings, rules=rules, facts=facts, changes=done)


def _answer(
    event: ChatMessage,
    *,
    state: ReplyState,
    settings: ReplySettings,
    rules: RuleIndex,
    facts: ChatFacts | None,
    changes: tuple[Change, ...],
) -> Decision:
    facts = facts or ChatFacts()
    values = TemplateValues(
        buyer_name=event.sender_nick or None,
        item_id=event.item_id,
        item_title=facts.item_title,
        order_id=facts.order_id,
        account_name=settings.account_name or None,
    )
    rule = rules.match(event.text, item_id=event.item_id)
    if rule is not None:
        source = f"rule:{rule.id}"
        text = render(rule.reply, values) if rule.kind is ReplyKind.TEXT else rule.reply
        if not text.strip():
            return Decision(Action.NONE, Reason.EMPTY_REPLY, source=source, changes=changes)
        return Decision(
            Action.REPLY, Reason.RULE_MATCHED, source=source, reply=OutgoingReply(text, rule.kind), changes=changes
        )
    default = _default_reply(event, state=state, settings=settings, values=values)
    if settings.ai.enabled:
        bargaining = is_bargaining(event.text)
        rounds = state.bargain_rounds.get(event.chat_id, 0) + (1 if bargaining else 0)
        query = AIQuery(
            chat_id=event.chat_id,
            buyer_text=event.text,
            buyer_name=event.sender_nick,
            item_id=event.item_id,
            facts=facts,
            bargain_round=rounds,
        )
        fallback = Decision(
            default.action, Reason.AI_FAILED, source=default.source, reply=default.reply, changes=default.changes
        )
        counted = (CountBargainRound(event.chat_id),) if bargaining else ()
        return Decision(
            Action.ASK_AI,
            Reason.ASK_AI,
            source="ai",
            changes=(*changes, *counted),
            ai_query=query,
            fallback=fallback,
        )
    return Decision(
        default.action, default.reason, source=default.source, reply=default.reply, changes=(*changes, *default.changes)
    )


def _default_reply(
    event: ChatMessage, *, state: ReplyState, settings: ReplySettings, values: TemplateValues
) -> Decision:
    if not settings.default_reply.strip():
        return Decision(Action.NONE, Reason.NO_MATCH)
    if settings.default_reply_once_per_chat and event.chat_id in state.default_sent:
        return Decision(Action.NONE, Reason.DEFAULT_ONCE_PER_CHAT_USED)
    try:
        text = render(settings.default_reply, values)
    except TemplateError:
        # Settings are validated when saved; a bad one that slipped through is never sent with raw braces.
        return Decision(Action.NONE, Reason.INVALID_TEMPLATE, source="default")
    if not text.strip():
        return Decision(Action.NONE, Reason.EMPTY_REPLY, source="default")
    return Decision(
        Action.REPLY,
        Reason.DEFAULT_REPLY,
        source="default",
        reply=OutgoingReply(text),
        # Remembered only when it matters: an account answering every chat by default keeps no per-chat memory.
        changes=(MarkDefaultSent(event.chat_id),) if settings.default_reply_once_per_chat else (),
    )
