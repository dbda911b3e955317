"""What an AI answer becomes, pure: the error types every AI failure is one of, and the answer ready to send.

The HTTP client lives in `platform/ai.py` (an `AIClient` asks the model and hands back its text, raising the
errors below); here the text is judged: no text is an `AIEmptyAnswer`, anything else passes the guards of
`bargain.py` before anyone can send it. The caller has one thing to catch, `AIReplyError`, and then sends the
decision's `fallback` (the default reply).

    AIReplyError         the AI gave no usable answer: fall back
    ├── AITimeout        no answer within the time budget
    ├── AIRequestFailed  the endpoint refused or failed (HTTP status, connection, malformed response)
    └── AIEmptyAnswer    an answer without text
"""

from __future__ import annotations

from dataclasses import dataclass

from .bargain import guard_answer
from .prompt import AIQuery
from .settings import AISettings


class AIReplyError(Exception):
    """The AI gave no usable answer; the caller sends the fallback reply."""


class AITimeout(AIReplyError):
    """No answer within the time budget."""


class AIRequestFailed(AIReplyError):
    """The endpoint answered with an error, could not be reached, or answered something unreadable."""


class AIEmptyAnswer(AIReplyError):
    """The model answered with no text."""


@dataclass(frozen=True, slots=True)
class AIAnswer:
    """An AI reply ready to send: `text` passed the guards (or replaced what did not; `blocked` says why)."""

    text: str
    original: str
    blocked: str | None
    model: str


def accept_answer(text: str, query: AIQuery, *, settings: AISettings) -> AIAnswer:
    """The model's raw `text` for `query` as the reply to send; raises AIEmptyAnswer when there is nothing to send.

    The guards replace a price below the floor, too many bargaining rounds or an off-platform contact with a safe
    text; `blocked` says which one did.
    """
    text = text.strip()
    if not text:
        raise AIEmptyAnswer("the AI answered with no text")
    guarded = guard_answer(
        text,
        item_price=query.facts.item_price,
        settings=settings,
        bargain_round=query.bargain_round,
    )
    return AIAnswer(guarded.text, guarded.original, guarded.blocked, settings.model)
