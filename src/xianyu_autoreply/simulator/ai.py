"""An OpenAI-compatible `POST /v1/chat/completions` with deterministic answers, for AI-reply tests and the demo.

The answer is derived from the last user message unless a rule says otherwise. Rules (`POST /_sim/ai`) select
requests by API key and/or model, so one test, or one seller's AI settings, can get a fixed reply, a delay or an
HTTP error; the most specific matching rule wins. Every request is recorded so tests can assert on the history the
client sent. `stream: true` is answered as server-sent events, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from ..protocol import now_ms
from .responses import json_response

_REQUESTS_KEPT = 1000
DEFAULT_MODEL = "sim-model"


@dataclass(frozen=True, slots=True)
class AiRule:
    """How to answer the requests it selects (`api_key`/`model` None = any)."""

    api_key: str | None = None
    model: str | None = None
    reply: str | None = None  # None = derived from the last user message
    delay: float = 0.0
    status: int = 200

    def selects(self, api_key: str | None, model: str) -> bool:
        return (self.api_key is None or self.api_key == api_key) and (self.model is None or self.model == model)

    @property
    def specificity(self) -> int:
        return 2 * (self.api_key is not None) + (self.model is not None)

    def to_json(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "model": self.model,
            "reply": self.reply,
            "delay": self.delay,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class AiRequest:
    """One chat-completion request as received, and what was answered."""

    at_ms: int
    model: str
    messages: list[dict[str, Any]] = field(hash=False)
    api_key: str | None
    status: int
    answer: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at_ms": self.at_ms,
            "model": self.model,
            "messages": self.messages,
            "api_key": self.api_key,
            "status": self.status,
            "answer": self.answer,
        }


def derived_answer(messages: list[dict[str, Any]]) -> str:
    """The default reply: deterministic, and quoting the buyer so a test can tell which message it answers."""
    last = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    quoted = last if len(last) <= 60 else last[:60] + "…"
    return f"您好！关于「{quoted}」：宝贝还在，喜欢可以直接拍下，我们尽快发货。"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _openai_error(message: str, *, status: int, kind: str = "invalid_request_error") -> web.Response:
    return json_response({"error": {"message": message, "type": kind, "param": None, "code": None}}, status=status)


def _parse(body: bytes) -> tuple[str, list[dict[str, Any]], bool] | str:
    """(model, messages, stream) of a request body, or what is wrong with it."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "request body is not JSON"
    if not isinstance(doc, dict):
        return "request body must be a JSON object"
    model, messages = doc.get("model"), doc.get("messages")
    if not isinstance(model, str) or not model:
        return "`model` must be a non-empty string"
    if not isinstance(messages, list) or not messages:
        return "`messages` must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"messages[{i}] must be an object with a `role`"
    return model, messages, doc.get("stream") is True


class AiBackend:
    """The chat-completion endpoint, its rules and its request log."""

    def __init__(self) -> None:
        self._rules: list[AiRule] = []
        self._requests: deque[AiRequest] = deque(maxlen=_REQUESTS_KEPT)
        self._ids = itertools.count(1)

    def configure(self, rule: AiRule) -> AiRule:
        """Add a rule, replacing the one with the same selector (api_key, model)."""
        self._rules = [r for r in self._rules if (r.api_key, r.model) != (rule.api_key, rule.model)] + [rule]
        return rule

    def reset(self) -> None:
        """Forget every rule and every recorded request."""
        self._rules.clear()
        self._requests.clear()

    def rules(self) -> list[AiRule]:
        return list(self._rules)

    def rule_for(self, api_key: str | None, model: str) -> AiRule:
        matching = [r for r in self._rules if r.selects(api_key, model)]
        return max(matching, key=lambda r: r.specificity, default=AiRule())

    def requests(self, *, api_key: str | None = None, model: str | None = None) -> list[AiRequest]:
        return [
            r
            for r in self._requests
            if (api_key is None or r.api_key == api_key) and (model is None or r.model == model)
        ]

    async def models(self, request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [{"id": DEFAULT_MODEL, "object": "model", "owned_by": "sim"}]})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        parsed = _parse(await request.read())
        if isinstance(parsed, str):
            return _openai_error(parsed, status=400)
        model, messages, stream = parsed
        auth = request.headers.get("Authorization", "")
        api_key = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else ""
        rule = self.rule_for(api_key or None, model)
        answer = rule.reply if rule.reply is not None else derived_answer(messages)
        ok = rule.status == 200
        self._requests.append(
            AiRequest(now_ms(), model, messages, api_key or None, rule.status, answer if ok else None)
        )
        if rule.delay:
            await asyncio.sleep(rule.delay)
        if not ok:
            return _openai_error("simulated failure", status=rule.status, kind="server_error")
        completion_id = f"chatcmpl-sim-{next(self._ids)}"
        if stream:
            return await self._stream(request, completion_id, model, answer)
        usage = {"prompt_tokens": sum(len(_text(m.get("content"))) for m in messages), "completion_tokens": len(answer)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                "usage": usage,
            }
        )

    async def _stream(self, request: web.Request, completion_id: str, model: str, answer: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        created = int(time.time())
        deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
        deltas += [({"content": answer[i : i + 16]}, None) for i in range(0, len(answer), 16)]
        deltas.append(({}, "stop"))
        for delta, finish in deltas:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
