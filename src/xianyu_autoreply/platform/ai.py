"""The AI reply over HTTP: the `AIClient` seam, its OpenAI-compatible implementation, and `AIReplier` on top.

`replies` builds the prompt (`replies.prompt.build_messages`) and judges the answer (`replies.ai.accept_answer`:
the bargaining and off-platform guards); an `AIClient` only carries the messages to a model and brings its text
back. `OpenAIClient` is a thin shell around `openai.AsyncOpenAI`: the whole call, retries included, runs under one
`asyncio.timeout` (a slow model delays only the chat that asked), and every failure becomes one of the typed
`AIReplyError`s. The base URL is the account owner's choice: it goes through the outbound policy (outbound.py)
before the call and at every connection the SDK makes, redirects included; a refused one is an `AIRequestFailed`
saying why. `AIReplier` is what the engine holds per account: prompt -> client -> guarded answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
import openai
from openai.types.chat import ChatCompletion

from ..outbound import OutboundGuard, OutboundRefused, Purpose, check_url
from ..replies.ai import AIAnswer, AIEmptyAnswer, AIReplyError, AIRequestFailed, AITimeout, accept_answer
from ..replies.prompt import AIQuery, Turn, build_messages
from ..replies.settings import AISettings

__all__ = [
    "AIAnswer",
    "AIClient",
    "AIEmptyAnswer",
    "AIReplier",
    "AIReplyError",
    "AIRequestFailed",
    "AITimeout",
    "OpenAIClient",
    "preload_sdk",
]

DEFAULT_TIMEOUT_S = 20.0
DEFAULT_MAX_RETRIES = 1
# Sent when the account has no key: local OpenAI-compatible servers want some key, and an empty one would make the
# SDK fall back to OPENAI_API_KEY from the environment, leaking that key to the account's endpoint.
_NO_KEY = "no-key"
_AI_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # one account's endpoint


class AIClient(Protocol):
    """Asks a chat model; the seam between the pure reply logic and the network."""

    async def complete(self, messages: Sequence[Mapping[str, str]], settings: AISettings) -> str:
        """The model's text for the chat `messages` (OpenAI format), asked of `settings`' endpoint and model.

        Raises `AITimeout` when no answer came within the client's time budget and `AIRequestFailed` when the
        endpoint refused, failed or could not be reached (the outbound policy's refusal included).
        """
        ...


def preload_sdk() -> None:
    """Import the SDK's resource modules now, in a worker thread at start-up.

    The SDK imports them lazily on a client's first `.chat`: ~0.9 s of CPU building pydantic models, inside the
    event loop, which stalls every account (heartbeats included) on the first AI answer of the process.
    """
    import openai.resources  # noqa: F401


class OpenAIClient:
    """An `AIClient` for OpenAI-compatible endpoints, through the `openai` SDK; close it with `aclose()`."""

    def __init__(
        self,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """`outbound` is the policy for the base URL (public addresses only when not given). An `http_client`
        given here is used as it is, without the policy's transport (tests)."""
        self.timeout_s = timeout_s
        self._max_retries = max_retries
        self._outbound = outbound or OutboundGuard()
        if http_client is None:
            # The SDK's own defaults (timeouts, pool, redirects followed), but every connection checked, and no
            # proxy from the environment: it would fetch the owner's URL on our behalf, past the check.
            http_client = openai.DefaultAsyncHttpxClient(
                transport=self._outbound.transport(limits=_AI_LIMITS), trust_env=False
            )
        self._http = http_client
        self._sdk: openai.AsyncOpenAI | None = None
        self._sdk_for: tuple[str | None, str] | None = None

    def _client(self, settings: AISettings) -> openai.AsyncOpenAI:
        """The SDK client for the settings' endpoint and key; all share one connection pool."""
        key = (settings.base_url, settings.api_key)
        if self._sdk is None or self._sdk_for != key:
            # Retries help with fast failures (a 500, a refused connection); the overall timeout bounds slow ones.
            self._sdk = openai.AsyncOpenAI(
                base_url=settings.base_url or None,
                api_key=settings.api_key or _NO_KEY,
                timeout=self.timeout_s,
                max_retries=self._max_retries,
                http_client=self._http,
            )
            self._sdk_for = key
        return self._sdk

    async def complete(self, messages: Sequence[Mapping[str, str]], settings: AISettings) -> str:
        """See `AIClient.complete`; an answer without text is returned as "" (the caller judges it)."""
        if settings.base_url:
            try:
                check_url(settings.base_url, self._outbound.policy, purpose=Purpose.AI)
            except OutboundRefused as exc:
                raise AIRequestFailed(f"AI base URL refused: {exc.reason}") from exc
        sdk = self._client(settings)
        chat: Any = list(messages)  # the SDK's message union; build_messages makes exactly that shape
        try:
            async with asyncio.timeout(self.timeout_s):
                completion = await sdk.chat.completions.create(model=settings.model, messages=chat)
        except (TimeoutError, openai.APITimeoutError) as exc:
            raise AITimeout(f"no AI answer within {self.timeout_s:g} s") from exc
        except (openai.OpenAIError, httpx.HTTPError, ValueError) as exc:
            if (refused := _refusal(exc)) is not None:  # the SDK wraps it in APIConnectionError
                raise AIRequestFailed(f"AI base URL refused: {refused.reason}") from exc
            raise AIRequestFailed(f"AI request failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(completion, ChatCompletion):
            # The SDK hands back the raw body when an endpoint answers something other than JSON (a proxy page).
            raise AIRequestFailed(f"AI endpoint answered {type(completion).__name__}, not a chat completion")
        return _answer_text(completion)

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()


class AIReplier:
    """Answers buyers through one account's AI settings: prompt (pure) -> `client` -> guarded answer (pure)."""

    def __init__(
        self,
        settings: AISettings,
        *,
        account_name: str = "",
        client: AIClient | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """Without a `client`, an `OpenAIClient` is made from the other arguments and closed by `aclose()`;
        a given one belongs to the caller."""
        self.settings = settings
        self.account_name = account_name
        self._owned: OpenAIClient | None = None
        if client is None:
            client = self._owned = OpenAIClient(
                timeout_s=timeout_s, max_retries=max_retries, http_client=http_client, outbound=outbound
            )
        self.client: AIClient = client

    async def reply(self, query: AIQuery, *, history: Sequence[Turn] = ()) -> AIAnswer:
        """Ask the model about `query` with the chat's `history` (oldest first); raises AIReplyError on failure."""
        messages = build_messages(query, history=history, settings=self.settings, account_name=self.account_name)
        text = await self.client.complete(messages, self.settings)
        return accept_answer(text, query, settings=self.settings)

    async def aclose(self) -> None:
        """Close the client this replier made (a given one is left to its owner)."""
        if self._owned is not None:
            await self._owned.aclose()

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
