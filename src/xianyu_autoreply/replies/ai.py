"""The AI reply client: the one I/O part of `replies`, a thin shell around `openai.AsyncOpenAI`.

It asks the account's OpenAI-compatible endpoint for an answer (prompt from `prompt.py`) and passes the answer
through the guards of `bargain.py` before anyone can send it. Every failure becomes an `AIReplyError`, so the
caller has one thing to catch and then sends the decision's `fallback` (the default reply). The whole call,
retries included, runs under one `asyncio.timeout`: a slow model delays only the chat that asked.
The base URL is the account owner's choice: it goes through the outbound policy (outbound.py) before the call and
at every connection the SDK makes, redirects included; a refused one is an `AIRequestFailed` saying why.

    AIReplyError         the AI gave no usable answer: fall back
    ├── AITimeout        no answer within the time budget
    ├── AIRequestFailed  the endpoint refused or failed (HTTP status, connection, malformed response)
    └── AIEmptyAnswer    an answer without text
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx
import openai
from openai.types.chat import ChatCompletion

from ..outbound import OutboundGuard, OutboundRefused, Purpose, check_url
from .bargain import guard_answer
from .prompt import AIQuery, Turn, build_messages
from .settings import AISettings

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_RETRIES = 1
# Sent when the account has no key: local OpenAI-compatible servers want some key, and an empty one would make the
# SDK fall back to OPENAI_API_KEY from the environment, leaking that key to the account's endpoint.
_NO_KEY = "no-key"
_AI_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # one account's endpoint


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


class AIReplier:
    """Answers buyers through one account's OpenAI-compatible endpoint."""

    def __init__(
        self,
        settings: AISettings,
        *,
        account_name: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """`outbound` is the policy for the base URL (public addresses only when not given). An `http_client`
        given here is used as it is, without the policy's transport (tests)."""
        self.settings = settings
        self.account_name = account_name
        self.timeout_s = timeout_s
        self._outbound = outbound or OutboundGuard()
        if http_client is None:
            # The SDK's own defaults (timeouts, pool, redirects followed), but every connection checked, and no
            # proxy from the environment: it would fetch the owner's URL on our behalf, past the check.
            http_client = openai.DefaultAsyncHttpxClient(
                transport=self._outbound.transport(limits=_AI_LIMITS), trust_env=False
            )
        # Retries help with fast failures (a 500, a refused connection); the overall timeout bounds slow ones.
        self._client = openai.AsyncOpenAI(
            base_url=settings.base_url or None,
            api_key=settings.api_key or _NO_KEY,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=http_client,
        )

    async def reply(self, query: AIQuery, *, history: Sequence[Turn] = ()) -> AIAnswer:
        """Ask the model about `query` with the chat's `history` (oldest first); raises AIReplyError on failure."""
        messages: Any = build_messages(query, history=history, settings=self.settings, account_name=self.account_name)
        if self.settings.base_url:
            try:
                check_url(self.settings.base_url, self._outbound.policy, purpose=Purpose.AI)
            except OutboundRefused as exc:
                raise AIRequestFailed(f"AI base URL refused: {exc.reason}") from exc
        try:
            async with asyncio.timeout(self.timeout_s):
                completion = await self._client.chat.completions.create(model=self.settings.model, messages=messages)
        except (TimeoutError, openai.APITimeoutError) as exc:
            raise AITimeout(f"no AI answer within {self.timeout_s:g} s") from exc
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            if (refused := _refusal(exc)) is not None:  # the SDK wraps it in APIConnectionError
                raise AIRequestFailed(f"AI base URL refused: {refused.reason}") from exc
            raise AIRequestFailed(f"AI request failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(completion, ChatCompletion):
            # The SDK hands back the raw body when an endpoint answers something other than JSON (a proxy page).
            raise AIRequestFailed(f"AI endpoint answered {type(completion).__name__}, not a chat completion")
        text = _answer_text(completion)
        if not text:
            raise AIEmptyAnswer("the AI answered with no text")
        guarded = guard_answer(
            text,
            item_price=query.facts.item_price,
            settings=self.settings,
            bargain_round=query.bargain_round,
        )
        model = getattr(completion, "model", None) or self.settings.model
        return AIAnswer(guarded.text, guarded.original, guarded.blocked, model)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _refusal(exc: BaseException) -> OutboundRefused | None:
    """The outbound refusal behind an SDK error, if that is what it was."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None or isinstance(seen, OutboundRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _answer_text(completion: ChatCompletion) -> str:
    # Compatible endpoints are not always complete: the SDK does not validate, so read defensively.
    choices = getattr(completion, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    content = getattr(message, "content", None)
    return content.strip() if isinstance(content, str) else ""
