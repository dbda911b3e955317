"""The "try it" preview: what an account would answer to a text, without sending (REST `POST /accounts/{id}/try`).

It runs the real policy on a made-up buyer message in a fresh chat, so the answer is exactly what a new buyer
would get from the rules and the default reply. Where the AI would be asked, the result says so (`source` "ai",
`reason` "ask_ai") and carries the query; the caller may run it through `platform.ai.AIReplier` and show that answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..protocol.events import BuyerMessage, ContentType
from .admission import Incoming
from .policy import Action, ReplyState, decide
from .prompt import AIQuery, ChatFacts
from .rules import ReplyKind, RuleIndex
from .settings import ReplySettings

_TRY_CHAT = "try-it"
_TRY_TIME_MS = 1


@dataclass(frozen=True, slots=True)
class TryResult:
    """The would-be answer: `reply` is None when nothing would be sent (then `reason` says why)."""

    reply: str | None
    source: str
    reason: str
    kind: ReplyKind = ReplyKind.TEXT
    ai_query: AIQuery | None = None
    # For source "ai": what is sent if the AI fails.
    fallback_reply: str | None = None


def try_reply(
    text: str,
    *,
    item_id: str | None = None,
    rules: RuleIndex,
    settings: ReplySettings,
    buyer_name: str = "买家",
    facts: ChatFacts | None = None,
) -> TryResult:
    """The reply, its source and the reason a new buyer would get for `text` (about `item_id`), not sent."""
    message = BuyerMessage(
        message_id="try-it",
        chat_id=_TRY_CHAT,
        sender_id="try-it",
        sender_nick=buyer_name,
        item_id=item_id,
        text=text,
        content_type=int(ContentType.TEXT),
        created_ms=_TRY_TIME_MS,
    )
    # No waiting in a preview: debounce off; the message is as fresh as can be.
    settings = replace(settings, debounce_seconds=0)
    decision = decide(
        Incoming(message, _TRY_TIME_MS),
        state=ReplyState(),
        settings=settings,
        now_ms=_TRY_TIME_MS,
        rules=rules,
        facts=facts,
    )
    if decision.action is Action.ASK_AI:
        fallback = decision.fallback
        fallback_reply = fallback.reply.text if fallback is not None and fallback.reply is not None else None
        return TryResult(
            None, decision.source, decision.reason, ai_query=decision.ai_query, fallback_reply=fallback_reply
        )
    if decision.reply is None:
        return TryResult(None, decision.source, decision.reason)
    return TryResult(decision.reply.text, decision.source, decision.reason, kind=decision.reply.kind)
