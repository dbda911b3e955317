"""The desk against the store with an in-memory `GoodsWebhook` and session: the webhook seam without an HTTP server.

What the adapter raises decides the outcome by type: `WebhookBlocked` gives up at once, `WebhookError` is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from xianyu_autoreply.engine.events import EventBus
from xianyu_autoreply.engine.orders import DeliveryOptions, OrderDesk, WebhookBlocked, WebhookError
from xianyu_autoreply.engine.orders.courier import AccountLink
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import Reply, SendOutcome, Sent
from xianyu_autoreply.protocol import OrderEvent, OrderStatus
from xianyu_autoreply.store import DeliveryRule, DeliveryRuleSpec, DeliveryState, Order, Store

OPTIONS = DeliveryOptions(max_attempts=5, retry_base=0.01, retry_cap=0.02, sweep_interval=60.0, unit_gap=0.0)


@dataclass
class FakeWebhook:
    """Answers from a script, one entry per call: a text, or an exception to raise."""

    script: list[str | Exception]
    calls: list[tuple[str | None, str, int]] = field(default_factory=list)

    async def fetch(self, rule: DeliveryRule, order: Order, *, unit: int) -> str:
        self.calls.append((rule.content, order.order_id, unit))
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@dataclass
class FakeSession:
    """A connected account whose every send is confirmed."""

    sent: list[tuple[str, str, str | None]] = field(default_factory=list)

    async def send(self, chat_id: str, to_user: str, reply: Reply, **kwargs: Any) -> Sent:
        self.sent.append((chat_id, to_user, reply.text))
        return Sent(
            chat_id=chat_id,
            to_user=to_user,
            uuid=f"u{len(self.sent)}",
            content=reply.content(),
            source=reply.source,
            outcome=SendOutcome.CONFIRMED,
        )


async def _deliver(store: Store, webhook: FakeWebhook, order_id: str = "o1") -> tuple[FakeSession, DeliveryState]:
    await store.create_account("a", "unb=1; x=2")
    await store.replace_delivery_rules("a", [DeliveryRuleSpec("webhook", content="https://hooks.example/goods")])
    session = FakeSession()
    desk = OrderDesk(
        store=store,
        mtop=cast(MtopClient, None),  # not reached: auto-confirm is off
        bus=EventBus(),
        session_for=lambda account_id: cast(AccountLink, session),
        options=OPTIONS,
        webhook=webhook,
    )
    paid = OrderEvent(
        order_id=order_id,
        status=OrderStatus.PAID,
        chat_id="c1",
        buyer_id="b1",
        item_id="i1",
        text="paid",
        message_id="m1",
        created_ms=None,
    )
    try:
        await desk.on_event("a", paid)
        await desk.idle(timeout=10)
    finally:
        await desk.aclose()
    (delivery,) = await store.get_deliveries("a", order_id)
    return session, delivery.state


async def test_the_desk_delivers_what_the_webhook_adapter_answers(store: Store) -> None:
    webhook = FakeWebhook(["CODE-7"])
    session, state = await _deliver(store, webhook)
    assert state is DeliveryState.SENT
    assert webhook.calls == [("https://hooks.example/goods", "o1", 1)]
    assert session.sent == [("c1", "b1", "CODE-7")]


async def test_a_webhook_error_is_retried_and_a_blocked_webhook_gives_up_at_once(store: Store) -> None:
    webhook = FakeWebhook([WebhookError("webhook failed: down", status=503), "", WebhookBlocked("webhook refused: no")])
    session, state = await _deliver(store, webhook)
    assert state is DeliveryState.DELIVERY_FAILED
    (delivery,) = await store.get_deliveries("a", "o1")
    assert delivery.attempts == 3 and delivery.error == "webhook refused: no"  # of 5 allowed
    assert len(webhook.calls) == 3  # down, then nothing to deliver (both retried), then refused (never again)
    assert session.sent == []
