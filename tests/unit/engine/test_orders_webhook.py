"""The httpx webhook adapter on an in-memory transport: what it sends, and which typed error each failure is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import httpx
import pytest

from xianyu_autoreply.engine.orders import HttpGoodsWebhook, WebhookBlocked, WebhookError
from xianyu_autoreply.store import DeliveryKind, DeliveryRule

from .order_samples import ORDER as SAMPLE_ORDER
from .order_samples import rule

ORDER = replace(SAMPLE_ORDER, quantity=2)


def webhook_rule(url: str) -> DeliveryRule:
    return rule(1, kind=DeliveryKind.WEBHOOK, content=url)


def adapter(answer: Callable[[httpx.Request], httpx.Response], requests: list[httpx.Request]) -> HttpGoodsWebhook:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answer(request)

    return HttpGoodsWebhook(http=httpx.AsyncClient(transport=httpx.MockTransport(handle)), timeout=1.0, attempts=2)


async def test_the_order_is_posted_with_one_idempotency_key_and_the_answer_delivered() -> None:
    requests: list[httpx.Request] = []
    webhook = adapter(lambda request: httpx.Response(200, json={"content": "CODE-1"}), requests)
    assert await webhook.fetch(webhook_rule("https://hooks.example/goods"), ORDER, unit=2) == "CODE-1"
    (request,) = requests
    assert request.headers["Idempotency-Key"] == "a:o-1:2"
    assert request.url == "https://hooks.example/goods"
    body = httpx.Response(200, content=request.content).json()
    assert body["order_id"] == "o-1" and body["unit"] == 2 and body["quantity"] == 2 and body["buyer_nick"] == "小王"


async def test_a_5xx_is_retried_then_a_webhook_error_with_its_status() -> None:
    requests: list[httpx.Request] = []
    webhook = adapter(lambda request: httpx.Response(503), requests)
    with pytest.raises(WebhookError) as raised:
        await webhook.fetch(webhook_rule("https://hooks.example/goods"), ORDER, unit=1)
    assert type(raised.value) is WebhookError and raised.value.status == 503
    assert raised.value.reason == "webhook failed: _WebhookServerError HTTP 503"
    assert len(requests) == 2


async def test_a_4xx_is_a_webhook_error_at_once() -> None:
    requests: list[httpx.Request] = []
    webhook = adapter(lambda request: httpx.Response(404), requests)
    with pytest.raises(WebhookError) as raised:
        await webhook.fetch(webhook_rule("https://hooks.example/goods"), ORDER, unit=1)
    assert type(raised.value) is WebhookError and raised.value.status == 404
    assert raised.value.reason == "webhook refused: HTTP 404"
    assert len(requests) == 1


async def test_a_transport_error_on_every_try_is_a_webhook_error_without_status() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    requests: list[httpx.Request] = []
    webhook = adapter(down, requests)
    with pytest.raises(WebhookError) as raised:
        await webhook.fetch(webhook_rule("https://hooks.example/goods"), ORDER, unit=1)
    assert type(raised.value) is WebhookError and raised.value.status is None
    assert raised.value.reason == "webhook failed: ConnectError refused"
    assert len(requests) == 2


@pytest.mark.parametrize("url", ["ftp://hooks.example/goods", "http://127.0.0.1:8080/goods", "http://[::1]/goods"])
async def test_a_url_the_policy_refuses_is_blocked_and_reaches_nothing(url: str) -> None:
    requests: list[httpx.Request] = []
    webhook = adapter(lambda request: httpx.Response(200, text="CODE"), requests)
    with pytest.raises(WebhookBlocked) as raised:
        await webhook.fetch(webhook_rule(url), ORDER, unit=1)
    assert raised.value.reason.startswith("webhook refused: ")
    assert requests == []
