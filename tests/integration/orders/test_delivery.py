"""Auto-delivery through the whole engine against the simulator: exactly once, whatever happens around it."""

from __future__ import annotations

import asyncio
from typing import Any

from xianyu_autoreply.engine.events import DeliveryFailed, StockLow
from xianyu_autoreply.engine.scheduler import AccountScheduler
from xianyu_autoreply.platform.session import Reply, SendOutcome, Sent
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import DeliveryRuleSpec, DeliveryState, Store

from .conftest import EngineFactory, eventually, open_shop, sent_texts, settle

CARDS = [f"CARD-{n:03d}" for n in range(60)]


async def delivered(store: Store, account_id: str, order_id: str, units: int = 1) -> bool:
    deliveries = await store.get_deliveries(account_id, order_id)
    return len(deliveries) == units and all(d.state is DeliveryState.SENT for d in deliveries)


def connected(engine: AccountScheduler) -> bool:
    session = engine.session("a")
    return session is not None and session.connected


async def test_a_paid_order_gets_its_text_once_and_the_order_is_tracked(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("text", content="订单{order_id}：激活码 ABC")])
    created = sim.push_order(shop.unb, status="created", item_id=shop.item["item_id"])
    await eventually(lambda: store.list_orders("a"))  # events are handled concurrently: keep their order here
    paid = sim.push_order(shop.unb, status="paid", order_id=created["order_id"])
    await eventually(lambda: delivered(store, "a", paid["order_id"]))
    await settle()
    assert sent_texts(sim, shop, paid["chat_id"]) == [f"订单{paid['order_id']}：激活码 ABC"]
    order = await store.get_order("a", paid["order_id"])
    assert order.status == "paid" and [e.status for e in order.history] == ["created", "paid"]
    assert (order.buyer_id, order.item_id, order.chat_id) == (paid["buyer"], shop.item["item_id"], paid["chat_id"])
    assert order.deliveries[0].rule_id is not None and order.deliveries[0].attempts == 1
    outbound = [m for m in await store.list_messages("a", chat_id=paid["chat_id"]) if m.direction == "out"]
    assert [m.reply_source for m in outbound] == [f"delivery:{order.deliveries[0].rule_id}"]
    assert sim.shipments(seller=shop.unb) == []  # auto-confirm is off by default


async def test_an_order_without_a_matching_rule_is_tracked_but_not_delivered(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("text", content="x", item_id="1234567890")])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: store.list_orders("a"))
    await settle()
    assert sent_texts(sim, shop, paid["chat_id"]) == []
    assert (await store.get_order("a", paid["order_id"])).deliveries == ()


async def test_fifty_concurrent_paid_orders_each_get_a_distinct_line(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=CARDS, low_stock_threshold=5)])
    orders = [sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"]) for _ in range(50)]

    async def all_delivered() -> bool:
        done = await asyncio.gather(*(delivered(store, "a", o["order_id"]) for o in orders))
        return all(done)

    await eventually(all_delivered, timeout=60)
    got = [sent_texts(sim, shop, o["chat_id"]) for o in orders]
    assert all(len(texts) == 1 for texts in got)
    lines = [texts[0] for texts in got]
    assert len(set(lines)) == 50 and set(lines) <= set(CARDS)
    (rule,) = await store.list_delivery_rules("a")
    assert (rule.stock.available, rule.stock.reserved, rule.stock.delivered) == (10, 0, 50)


async def test_resent_paid_events_and_a_reconnect_never_deliver_twice(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=CARDS[:3])])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    for _ in range(2):
        sim.push_order(shop.unb, status="paid", order_id=paid["order_id"])
    await eventually(lambda: delivered(store, "a", paid["order_id"]))
    sim.set_fault("drop", seller=shop.unb)
    await eventually(lambda: engine.state("a").reconnects >= 1 and connected(engine))
    sim.push_order(shop.unb, status="paid", order_id=paid["order_id"])
    await settle(1.0)
    assert sent_texts(sim, shop, paid["chat_id"]) == [CARDS[0]]
    (rule,) = await store.list_delivery_rules("a")
    assert rule.stock.delivered == 1 and rule.stock.available == 2


async def test_a_restart_between_claim_and_send_resumes_and_delivers_once(
    make_engine: EngineFactory, sim: Simulator, store: Store
) -> None:
    first = await make_engine()
    shop = await open_shop(first, sim, [DeliveryRuleSpec("text", content="goods", delay_seconds=1.5)])
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: store.get_deliveries("a", paid["order_id"]))  # claimed, waiting out the delay
    await first.stop()
    assert sent_texts(sim, shop, paid["chat_id"]) == []
    second = await make_engine()
    await eventually(lambda: delivered(store, "a", paid["order_id"]))
    await second.stop()
    third = await make_engine()
    await eventually(lambda: connected(third))
    await settle(1.0)
    assert sent_texts(sim, shop, paid["chat_id"]) == ["goods"]


async def test_an_attempt_interrupted_mid_send_is_marked_failed_not_resent(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("text", content="goods")])
    created = sim.push_order(shop.unb, status="created", item_id=shop.item["item_id"])
    await eventually(lambda: store.list_orders("a"))
    # What a process that died during the send leaves behind: a claimed unit with one attempt in flight.
    # Written while the account is off, so that the engine meets it only as a whole (as after a restart).
    await engine.set_enabled("a", False)
    (rule,) = await store.list_delivery_rules("a")
    await store.record_order("a", created["order_id"], status="paid")
    assert await store.claim_delivery("a", created["order_id"], 1, rule_id=rule.id)
    await store.update_delivery("a", created["order_id"], 1, state=DeliveryState.SENDING)
    await engine.set_enabled("a", True)
    await eventually(lambda: _state(store, created["order_id"], DeliveryState.DELIVERY_FAILED), timeout=10)
    (delivery,) = await store.get_deliveries("a", created["order_id"])
    assert "interrupted" in (delivery.error or "")
    assert sent_texts(sim, shop, created["chat_id"]) == []


async def test_an_attempt_interrupted_before_its_send_is_retried_and_delivered_once(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("text", content="goods")])
    created = sim.push_order(shop.unb, status="created", item_id=shop.item["item_id"])
    await eventually(lambda: store.list_orders("a"))
    # A process that died while preparing the goods (a webhook call, the stock line): nothing had left yet.
    await engine.set_enabled("a", False)
    (rule,) = await store.list_delivery_rules("a")
    await store.record_order("a", created["order_id"], status="paid")
    assert await store.claim_delivery("a", created["order_id"], 1, rule_id=rule.id)
    await store.update_delivery("a", created["order_id"], 1, state=DeliveryState.PENDING)
    await engine.set_enabled("a", True)
    await eventually(lambda: _state(store, created["order_id"], DeliveryState.SENT), timeout=10)
    await settle(0.5)
    assert sent_texts(sim, shop, created["chat_id"]) == ["goods"]


async def _state(store: Store, order_id: str, state: DeliveryState) -> bool:
    deliveries = await store.get_deliveries("a", order_id)
    return bool(deliveries) and deliveries[0].state is state


async def test_two_engines_on_one_database_deliver_once(
    make_engine: EngineFactory, sim: Simulator, store: Store
) -> None:
    first = await make_engine()
    shop = await open_shop(first, sim, [DeliveryRuleSpec("batch", lines=CARDS[:5])])
    second = await make_engine()  # the same account, connected twice: both see every push
    await eventually(lambda: connected(second))
    orders = [sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"]) for _ in range(3)]
    for order in orders:
        await eventually(lambda order=order: delivered(store, "a", order["order_id"]))
    await settle(1.0)
    assert [len(sent_texts(sim, shop, o["chat_id"])) for o in orders] == [1, 1, 1]
    (rule,) = await store.list_delivery_rules("a")
    assert rule.stock.delivered == 3


async def test_a_multi_quantity_order_gets_one_line_per_unit(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=CARDS[:5])])
    created = sim.push_order(shop.unb, status="created", item_id=shop.item["item_id"])
    await eventually(lambda: store.list_orders("a"))
    await store.record_order("a", created["order_id"], status="created", quantity=3)
    sim.push_order(shop.unb, status="paid", order_id=created["order_id"])
    await eventually(lambda: delivered(store, "a", created["order_id"], units=3))
    assert sent_texts(sim, shop, created["chat_id"]) == CARDS[:3]


class FlakySession:
    """The account's real session, whose first `failures` sends provably fail (the platform refused them)."""

    def __init__(self, real: Any, failures: int) -> None:
        self._real = real
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send(self, chat_id: str, to_user: str, reply: Reply, **kwargs: Any) -> Sent:
        self.calls += 1
        if self.calls <= self.failures:
            return Sent(
                chat_id=chat_id,
                to_user=to_user,
                uuid="u",
                content=reply.content(),
                source=reply.source,
                outcome=SendOutcome.NOT_SENT,
                error="platform answered 400",
            )
        return await self._real.send(chat_id, to_user, reply, **kwargs)


def flaky(engine: AccountScheduler, failures: int) -> FlakySession:
    wrapper = FlakySession(engine.session("a"), failures)
    engine.orders._session_for = lambda account_id: wrapper  # the desk's seam to the session
    return wrapper


async def test_a_failed_send_releases_the_line_and_a_retry_delivers(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=CARDS[:2])])
    session = flaky(engine, failures=2)
    paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    await eventually(lambda: delivered(store, "a", paid["order_id"]))
    (delivery,) = await store.get_deliveries("a", paid["order_id"])
    assert delivery.attempts == 3 and session.calls == 3
    assert sent_texts(sim, shop, paid["chat_id"]) == [CARDS[0]]  # the released line went out in the end
    (rule,) = await store.list_delivery_rules("a")
    assert (rule.stock.available, rule.stock.reserved, rule.stock.delivered) == (1, 0, 1)


async def test_failures_end_in_delivery_failed_with_the_reason_and_the_stock_intact(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=CARDS[:2])])
    flaky(engine, failures=100)
    with engine.bus.listening(types={DeliveryFailed}) as failures:
        paid = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
        await eventually(lambda: _state(store, paid["order_id"], DeliveryState.DELIVERY_FAILED))
        event = await asyncio.wait_for(failures.get(), 5)
    (delivery,) = await store.get_deliveries("a", paid["order_id"])
    assert delivery.attempts == 3 and "platform answered 400" in (delivery.error or "")
    assert isinstance(event, DeliveryFailed) and event.order_id == paid["order_id"]
    (rule,) = await store.list_delivery_rules("a")
    assert (rule.stock.available, rule.stock.reserved) == (2, 0)
    assert sent_texts(sim, shop, paid["chat_id"]) == []


async def test_out_of_stock_warns_and_ends_in_delivery_failed(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=CARDS[:1], low_stock_threshold=0)])
    with engine.bus.listening(types={StockLow}) as low:
        first = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
        await eventually(lambda: delivered(store, "a", first["order_id"]))
        warning = await asyncio.wait_for(low.get(), 5)
        assert isinstance(warning, StockLow) and warning.available == 0
        second = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
        await eventually(lambda: _state(store, second["order_id"], DeliveryState.DELIVERY_FAILED))
    (delivery,) = await store.get_deliveries("a", second["order_id"])
    assert delivery.error == "out of stock"


async def test_a_refund_returns_the_line_to_stock_when_the_rule_allows_it(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shop = await open_shop(
        engine,
        sim,
        [
            DeliveryRuleSpec("batch", lines=["REUSE-1"], reusable_on_refund=True),
            DeliveryRuleSpec("batch", lines=["ONCE-1"], title_keyword="年卡"),
        ],
    )
    other = sim.create_item(shop.unb, title="音乐年卡", price="5")
    reusable = sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"])
    once = sim.push_order(shop.unb, status="paid", item_id=other["item_id"])
    await eventually(lambda: delivered(store, "a", reusable["order_id"]))
    await eventually(lambda: delivered(store, "a", once["order_id"]))
    assert sent_texts(sim, shop, once["chat_id"]) == ["ONCE-1"]  # chosen by the item's title
    for order in (reusable, once):
        sim.push_order(shop.unb, status="refunded", order_id=order["order_id"])

    async def returned() -> bool:
        rules = await store.list_delivery_rules("a")
        return rules[0].stock.available == 1 and rules[1].stock.returned == 1

    await eventually(returned)
    assert (await store.get_order("a", once["order_id"])).status == "refunded"
    (reused_rule, _) = await store.list_delivery_rules("a")
    assert reused_rule.stock.delivered == 0


async def test_two_hundred_orders_over_ten_accounts_consume_two_hundred_distinct_lines(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    shops = []
    for n in range(10):
        lines = [f"A{n}-CARD-{k:02d}" for k in range(25)]
        shops.append(await open_shop(engine, sim, [DeliveryRuleSpec("batch", lines=lines)], account_id=f"acc{n}"))
    orders = [
        (shop, sim.push_order(shop.unb, status="paid", item_id=shop.item["item_id"]))
        for _ in range(20)
        for shop in shops
    ]

    async def all_delivered() -> bool:
        counts = [(await store.list_delivery_rules(shop.account_id))[0].stock.delivered for shop in shops]
        return counts == [20] * 10

    await eventually(all_delivered, timeout=120)
    got = [sent_texts(sim, shop, order["chat_id"]) for shop, order in orders]
    assert all(len(texts) == 1 for texts in got)
    assert len({texts[0] for texts in got}) == 200
