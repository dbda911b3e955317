"""The reply policy: one pure function from an admitted event to a decision with its reason.

`decide(incoming, state=..., settings=..., now_ms=..., rules=...)` takes what admission (`admission.py`) let in,
with its flags, and checks in this order (issue 5 §3):

1. not a chat message (typing, unknown payload)              -> none, `not_a_message`
2. order cards, system notices and the texts of PROTOCOL §12 -> none, `system_message`
3. older than `message_expire_seconds` when it arrived       -> none, `expired` (admission's flag)
4. a seller message: the echo of what we sent                -> none, `own_echo` (admission's flag; no pause)
   otherwise the seller typed it elsewhere                   -> none, `manual_takeover`, chat paused for
                                                                `pause_minutes` (0 = never pause)
5. a chat paused by a takeover                               -> none, `paused`
6. `debounce_seconds` > 0                                    -> wait, `debounce_wait`: answer at `wait_until_ms`
                                                                through `resolve_wait`, only if no newer
                                                                message arrived in the chat (`debounced`)
7. the first matching rule                                   -> reply, `rule_matched`, source `rule:<id>`
8. AI enabled                                                -> ask_ai with the query; `fallback` is what to
                                                                send if the AI fails (`ai_failed`)
9. the default reply                                         -> reply, `default_reply`, source `default`
    (once per chat when so set: `default_once_per_chat_used`), or none, `no_match`

Duplicates never reach `decide`: admission (or the store's unique key behind it) drops them first.

State: the policy never changes anything. Every decision lists its `changes`; the caller applies them with
`ReplyState.apply` right after deciding, with no `await` in between, so that two messages handled concurrently
see each other (the second one supersedes the first in a debounce). `ReplyState` is the one mutable object here
and only `apply` mutates it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..protocol.events import BuyerMessage, ChatMessage, OrderEvent, SellerMessage, SystemNotice
from ..protocol.notices import ORDER_STATUS_BY_TEXT, is_system_text
from .admission import Incoming, message_key
from .bargain import is_bargaining
from .prompt import AIQuery, ChatFacts
from .rules import ReplyKind, RuleIndex
from .settings import ReplySettings
from .templates import TemplateError, TemplateValues, render

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
class PauseChat:
    """Stop auto-replies in a chat until `until_ms` (manual takeover)."""

    chat_id: str
    until_ms: int


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


Change = PauseChat | AwaitDebounce | ClearDebounce | MarkDefaultSent | CountBargainRound


class ReplyState:
    """What the policy remembers for one account. Mutable, but only through `apply`; `decide` only reads it.

    The sizes bound memory for accounts that run for months.
    """

    __slots__ = ("bargain_rounds", "debouncing", "default_sent", "paused_until")

    def __init__(self) -> None:
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
                case PauseChat(chat_id, until_ms):
                    self.paused_until[chat_id] = max(until_ms, self.paused_until.get(chat_id, 0))
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


def decide(
    incoming: Incoming,
    *,
    state: ReplyState,
    settings: ReplySettings,
    now_ms: int,
    rules: RuleIndex,
    facts: ChatFacts | None = None,
) -> Decision:
    """Decide what to do with one admitted event (see the module docstring for the order of the checks)."""
    event = incoming.event
    if isinstance(event, OrderEvent | SystemNotice):
        return Decision(Action.NONE, Reason.SYSTEM_MESSAGE)
    if not isinstance(event, ChatMessage):
        return Decision(Action.NONE, Reason.NOT_A_MESSAGE)
    stripped = event.text.strip()
    if is_system_text(stripped) or stripped in ORDER_STATUS_BY_TEXT:
        return Decision(Action.NONE, Reason.SYSTEM_MESSAGE)
    if incoming.expired:
        return Decision(Action.NONE, Reason.EXPIRED)
    if isinstance(event, SellerMessage):
        if incoming.own_echo:
            return Decision(Action.NONE, Reason.OWN_ECHO)
        pause: tuple[Change, ...] = ()
        if settings.pause_minutes > 0:
            pause = (PauseChat(event.chat_id, now_ms + int(settings.pause_minutes * 60_000)),)
        return Decision(Action.NONE, Reason.MANUAL_TAKEOVER, changes=pause)
    if state.is_paused(event.chat_id, now_ms=now_ms):
        return Decision(Action.NONE, Reason.PAUSED)
    if settings.debounce_seconds > 0:
        until = now_ms + int(settings.debounce_seconds * 1000)
        return Decision(
            Action.WAIT,
            Reason.DEBOUNCE_WAIT,
            changes=(AwaitDebounce(event.chat_id, message_key(event), until),),
            wait_until_ms=until,
        )
    return _answer(event, state=state, settings=settings, rules=rules, facts=facts, changes=())


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
