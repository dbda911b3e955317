"""Owners' URLs under the outbound policy at delivery and notification time: a refused webhook or notification URL
reaches nothing, and says why. The receiver listens on 127.0.0.1, which the engine here does not open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from xianyu_autoreply import outbound
from xianyu_autoreply.config import OutboundSettings, Settings
from xianyu_autoreply.engine.events import LifecycleChanged
from xianyu_autoreply.engine.scheduler import AccountScheduler
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import DeliveryRuleSpec, DeliveryState, Store

from .conftest import ORDER_OPTIONS, Receiver, engines_on, eventually, open_shop, sent_texts, settle

LOOPBACK_REFUSED = "127.0.0.1 is a loopback address; an administrator can allow it with XAR_OUTBOUND__ALLOW"


@pytest.fixture
async def strict_engine(store: Store, settings: Settings) -> AsyncIterator[AccountScheduler]:
    """An engine under the default policy: public addresses only (the simulator is the administrator's URL)."""
    strict = settings.model_copy(update={"outbound": OutboundSettings()})
    async with engines_on(store, strict, ORDER_OPTIONS) as make:
        yield await make()


async def _failed(store: Store, order_id: str) -> bool:
    deliveries = await store.get_deliveries("a", order_id)
    return bool(deliveries) and deliveries[0].state is DeliveryState.DELIVERY_FAILED


async def test_a_webhook_to_a_refused_address_fails_at_once_with_the_reason_and_reaches_nothing(
    strict_engine: AccountScheduler, sim: Simulator, store: Store, receiver: Receiver
) -> None:
    shop = await open_shop(strict_engine, sim, [DeliveryRuleSpec("webhook", content=f"{receiver.url}/goods?t=s3")])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: _failed(store, paid["order_id"]))
    (delivery,) = await store.get_deliveries("a", paid["order_id"])
    assert delivery.error == f"webhook refused: {LOOPBACK_REFUSED}"
    assert delivery.attempts == 1  # permanent: not retried
    await settle()
    assert receiver.requests == []
    assert sent_texts(sim, shop, paid["chat_id"]) == []


async def test_a_webhook_host_name_resolving_to_loopback_is_refused_at_connect(
    strict_engine: AccountScheduler,
    sim: Simulator,
    store: Store,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(outbound, "system_resolver", to_loopback)
    port = receiver.url.rsplit(":", 1)[1]
    shop = await open_shop(strict_engine, sim, [DeliveryRuleSpec("webhook", content=f"http://hooks.test:{port}/goods")])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: _failed(store, paid["order_id"]))
    (delivery,) = await store.get_deliveries("a", paid["order_id"])
    assert delivery.error == "webhook refused: hooks.test resolves to 127.0.0.1, which is a loopback address; " + (
        "an administrator can allow it with XAR_OUTBOUND__ALLOW"
    )
    assert receiver.requests == []


async def test_a_notification_url_the_policy_refuses_is_not_sent(
    strict_engine: AccountScheduler, store: Store, receiver: Receiver
) -> None:
    await store.create_user("carol", "x", role="user")
    host = receiver.url.removeprefix("http://")
    await store.put_notification_settings("carol", urls=[f"json://{host}/notify"], events=[])
    await store.create_account("a", "unb=1; cookie2=abc; _m_h5_tk=t_1", owner="carol", enabled=False)
    strict_engine.bus.publish(LifecycleChanged(account_id="a", lifecycle="auth_expired", reason="gone"))
    await eventually(lambda: strict_engine.notifier.failed == 1)
    await settle()
    assert receiver.requests == [] and strict_engine.notifier.sent == 0
