"""Webhook deliveries against a loopback server, shipment confirmation, and owner notifications through apprise."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from xianyu_autoreply.engine.events import LifecycleChanged, OrderPaid
from xianyu_autoreply.engine.scheduler import AccountScheduler
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import DeliveryRuleSpec, DeliveryState, Store

from .conftest import Receiver, eventually, open_shop, sent_texts, settle
from .test_delivery import delivered


async def _state(store: Store, order_id: str) -> DeliveryState | None:
    deliveries = await store.get_deliveries("a", order_id)
    return deliveries[0].state if deliveries else None


async def test_a_webhook_rule_delivers_what_the_sellers_server_answers(
    engine: AccountScheduler, sim: Simulator, store: Store, receiver: Receiver
) -> None:
    async def answer(request: web.Request, entry: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"content": f"LINK-{entry['json']['order_id']}"})

    receiver.handler = answer
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("webhook", content=f"{receiver.url}/goods?token=s3cret")])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: delivered(store, "a", paid["order_id"]))
    assert sent_texts(sim, shop, paid["chat_id"]) == [f"LINK-{paid['order_id']}"]
    (request,) = receiver.requests
    assert request["path"] == "/goods"
    assert request["json"]["item_id"] == shop.item["item_id"] and request["json"]["unit"] == 1
    assert request["headers"]["Idempotency-Key"] == f"a:{paid['order_id']}:1"


async def test_a_slow_webhook_times_out_and_the_retry_delivers(
    engine: AccountScheduler, sim: Simulator, store: Store, receiver: Receiver
) -> None:
    async def slow_then_fast(request: web.Request, entry: dict[str, Any]) -> web.StreamResponse:
        if len(receiver.requests) == 1:
            await asyncio.sleep(2.0)  # past the webhook timeout (0.5 s)
        return web.Response(text="CODE-42\n")

    receiver.handler = slow_then_fast
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("webhook", content=f"{receiver.url}/goods")])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: delivered(store, "a", paid["order_id"]))
    assert sent_texts(sim, shop, paid["chat_id"]) == ["CODE-42"]
    assert len(receiver.requests) == 2
    assert len({r["headers"]["Idempotency-Key"] for r in receiver.requests}) == 1
    (delivery,) = await store.get_deliveries("a", paid["order_id"])
    assert delivery.attempts == 1  # retried inside the attempt (tenacity), not a second attempt


async def test_a_failing_webhook_ends_in_delivery_failed_and_the_owner_is_notified(
    engine: AccountScheduler, sim: Simulator, store: Store, receiver: Receiver
) -> None:
    async def broken(request: web.Request, entry: dict[str, Any]) -> web.StreamResponse:
        if request.path == "/notify":
            return web.Response(text="ok")
        return web.Response(status=503, text="down")

    receiver.handler = broken
    await store.create_user("alice", "x", role="user")
    host = receiver.url.removeprefix("http://")
    await store.put_notification_settings("alice", urls=[f"json://{host}/notify"], events=["delivery_failed"])
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("webhook", content=f"{receiver.url}/goods")], owner="alice")
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: receiver.bodies("/notify"), timeout=15)
    assert await _state(store, paid["order_id"]) is DeliveryState.DELIVERY_FAILED
    (delivery,) = await store.get_deliveries("a", paid["order_id"])
    assert delivery.attempts == 3 and "webhook failed" in (delivery.error or "")
    assert len(receiver.bodies("/goods")) == 3 * 2  # attempts x webhook tries per attempt
    (notice,) = receiver.bodies("/notify")
    assert paid["order_id"] in notice["title"] and "webhook failed" in notice["message"]
    assert sent_texts(sim, shop, paid["chat_id"]) == []


async def test_notifications_follow_the_event_filter_and_never_carry_a_cookie(
    engine: AccountScheduler, sim: Simulator, store: Store, receiver: Receiver
) -> None:
    await store.create_user("bob", "x", role="user")
    host = receiver.url.removeprefix("http://")
    await store.put_notification_settings("bob", urls=[f"json://{host}/notify"], events=["auth_expired"])
    shop = await open_shop(engine, sim, owner="bob")
    cookie2 = next(part for part in shop.seller["cookie"].split("; ") if part.startswith("cookie2="))
    engine.bus.publish(OrderPaid(account_id="a", order_id="1234567890"))  # not in bob's filter
    engine.bus.publish(LifecycleChanged(account_id="a", lifecycle="auth_expired", reason=f"rejected with {cookie2}"))
    await eventually(lambda: receiver.bodies("/notify"))
    await settle()
    (notice,) = receiver.bodies("/notify")
    assert "login expired" in notice["title"]
    assert cookie2.split("=", 1)[1] not in str(notice)


async def test_auto_confirm_follows_the_setting_and_a_change_applies_at_once(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("text", content="goods")])
    before = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: delivered(store, "a", before["order_id"]))
    await settle()
    assert sim.shipments(seller=shop.unb) == []
    assert (await store.get_order("a", before["order_id"])).status == "paid"

    await engine.update_account("a", auto_confirm=True)  # no restart
    after = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: sim.shipments(seller=shop.unb))
    await eventually(lambda: _status(store, after["order_id"], "shipped"))
    await settle()
    shipments = sim.shipments(seller=shop.unb)
    assert [(s["order_id"], s["ok"]) for s in shipments] == [(after["order_id"], True)]
    order = await store.get_order("a", after["order_id"])
    assert [e.status for e in order.history] == ["paid", "shipped"]
    assert sent_texts(sim, shop, after["chat_id"]) == ["goods"]


async def _status(store: Store, order_id: str, status: str) -> bool:
    orders = await store.list_orders("a")
    return any(o.order_id == order_id and o.status == status for o in orders)


async def test_a_delivered_order_pushed_paid_again_is_confirmed_once(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=["ONLY-1", "NEXT-2"])], auto_confirm=True)
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: _status(store, paid["order_id"], "shipped"))
    sim.push_order(shop.unb, status="paid", order_id=paid["order_id"])
    await settle(1.0)
    assert [(s["order_id"], s["ok"]) for s in sim.shipments(seller=shop.unb)] == [(paid["order_id"], True)]
    assert sent_texts(sim, shop, paid["chat_id"]) == ["ONLY-1"]
