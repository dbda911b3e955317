"""The seller's webhook behind a seam: `GoodsWebhook` gives the goods of one unit, or a typed `WebhookError`.

`HttpGoodsWebhook` is the real one: it POSTs the order to the rule's URL through the outbound policy (outbound.py),
checked at every connection, redirects included, and delivers what the server answers. Tests hand the desk an
in-memory fake instead.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ...outbound import OutboundGuard, OutboundRefused, Purpose, check_url
from ...store.records import DeliveryRule, Order

__all__ = [
    "GoodsWebhook",
    "HttpGoodsWebhook",
    "WebhookBlocked",
    "WebhookError",
    "idempotency_key",
    "webhook_answer",
    "webhook_payload",
]


class WebhookError(Exception):
    """The webhook gave no goods and nothing was delivered; a later attempt may succeed.

    `reason` is the text the seller sees on the delivery; `status` the HTTP status, when one came.
    """

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class WebhookBlocked(WebhookError):
    """The outbound policy refuses the URL (its scheme, or an address of its host or a redirect's): it can never
    succeed as configured, and nothing reached it."""


class GoodsWebhook(Protocol):
    """Where a `webhook` rule's goods come from."""

    async def fetch(self, rule: DeliveryRule, order: Order, *, unit: int) -> str:
        """The goods text for one unit of `order` (the desk refuses an empty one); `WebhookError` otherwise."""
        ...


class _WebhookServerError(Exception):
    """The seller's webhook answered 5xx: worth another try (its name is part of the reason the seller sees)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def webhook_payload(order: Order, *, unit: int) -> dict[str, Any]:
    """What the seller's server is told about the unit to deliver."""
    return {
        "account_id": order.account_id,
        "order_id": order.order_id,
        "unit": unit,
        "quantity": order.quantity,
        "item_id": order.item_id,
        "item_title": order.item_title,
        "buyer_id": order.buyer_id,
        "buyer_nick": order.buyer_nick,
    }


def idempotency_key(order: Order, *, unit: int) -> str:
    """The same key on every try: the seller's server can recognise our retries of one unit."""
    return f"{order.account_id}:{order.order_id}:{unit}"


def webhook_answer(body: bytes) -> str:
    """What a webhook answered to deliver: a JSON object's `content`/`text`/`data` string, else the body text."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(doc, dict):
            for key in ("content", "text", "data"):
                value = doc.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            return ""
    return text


class HttpGoodsWebhook:
    """POST the order to the rule's URL and deliver what it answers; retried on transport errors and 5xx.

    `outbound` is the policy for the URLs (public addresses only when not given); an `http` client given here is
    used as it is, without it, and is not closed by `aclose`.
    """

    def __init__(
        self,
        *,
        outbound: OutboundGuard | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        attempts: int = 3,
    ) -> None:
        self._outbound = outbound or OutboundGuard()
        self._owns_http = http is None
        self._http = http or self._outbound.http_client()
        self._timeout = timeout
        self._attempts = attempts

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def fetch(self, rule: DeliveryRule, order: Order, *, unit: int) -> str:
        """The answer's goods text (possibly empty). A URL the outbound policy refuses, before sending or at
        connect time, is `WebhookBlocked`; a 4xx, or transport errors and 5xx on every try, `WebhookError`."""
        url = rule.content or ""
        try:
            check_url(url, self._outbound.policy, purpose=Purpose.WEBHOOK)
        except OutboundRefused as exc:
            raise WebhookBlocked(f"webhook refused: {exc.reason}") from None
        payload = webhook_payload(order, unit=unit)
        headers = {"Idempotency-Key": idempotency_key(order, unit=unit)}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception_type((httpx.TransportError, _WebhookServerError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._http.post(url, json=payload, headers=headers, timeout=self._timeout)
                    status = response.status_code
                    if status >= 500:
                        raise _WebhookServerError(status)
                    if status >= 400:
                        raise WebhookError(f"webhook refused: HTTP {status}", status=status)
                    return webhook_answer(response.content)
        except (httpx.TransportError, _WebhookServerError) as exc:
            code = exc.status if isinstance(exc, _WebhookServerError) else None
            raise WebhookError(f"webhook failed: {type(exc).__name__} {exc}".strip(), status=code) from None
        except OutboundRefused as exc:  # at connect time: the host, or a redirect's, resolves somewhere refused
            raise WebhookBlocked(f"webhook refused: {exc.reason}") from None
        raise AssertionError("unreachable")  # pragma: no cover
