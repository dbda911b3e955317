"""Resume what was recorded: what a crash left open in the log is handled once when the account connects.

Each test writes the log as a killed process would have left it (the push recorded and ACKed, nothing after), then
starts an engine. The platform does not push an ACKed message again, so only the engine's resume can answer it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from xianyu_autoreply.engine.events import ReplyInterrupted
from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.protocol import now_ms
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, DeliveryRuleSpec, Inbound, Message, Store

from .conftest import EngineFactory, eventually


async def shop(store: Store, sim: Simulator, *, debounce: float = 0.0) -> dict[str, Any]:
    seller = sim.create_seller(nick="续店")
    await store.create_account("a", seller["cookie"])
    await store.put_settings("a", AccountSettings(default_reply="在的，亲", debounce_seconds=debounce))
    return seller


def offline_chat(sim: Simulator, seller: dict[str, Any], text: str) -> dict[str, Any]:
    """A buyer writes while nobody is connected: the chat exists on the platform, the push reached no one."""
    pushed = sim.push_message(seller["unb"], text)
    assert pushed["delivered"] == 0
    return pushed


def recorded(pushed: dict[str, Any], text: str, *, status: str = "received", age_ms: int = 1000) -> Inbound:
    return Inbound(
        pushed["message_id"],
        pushed["chat_id"],
        now_ms() - age_ms,
        text,
        "1",
        pushed["buyer"],
        "买家",
        pushed["item_id"],
        status=status,
    )


async def row(store: Store, chat_id: str, message_id: str) -> Message:
    (found,) = [m for m in await store.list_messages("a", chat_id=chat_id) if m.message_id == message_id]
    return found


async def running(engine: AccountScheduler) -> None:
    await eventually(lambda: engine.state("a").lifecycle is Lifecycle.RUNNING)


async def test_a_recorded_message_never_decided_is_answered_once_after_a_restart(
    store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    seller = await shop(store, sim)
    pushed = offline_chat(sim, seller, "还有货吗")
    assert await store.record_inbound("a", [recorded(pushed, "还有货吗")]) == [True]

    engine = await make_engine()
    await running(engine)
    replies = await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]))
    assert [r["text"] for r in replies] == ["在的，亲"]
    await eventually(lambda: _is(store, pushed, "replied"))

    sim.set_fault("drop", seller=seller["unb"])  # a reconnect resumes again: nothing is open any more
    await eventually(lambda: len([c for c in sim.connections(seller=seller["unb"]) if c["registered"]]) >= 2)
    await running(engine)
    await asyncio.sleep(1.0)
    assert len(sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])) == 1


async def _status(store: Store, pushed: dict[str, Any]) -> str:
    found = [
        m for m in await store.list_messages("a", chat_id=pushed["chat_id"]) if m.message_id == pushed["message_id"]
    ]
    return found[0].status if found else ""


async def test_a_recorded_message_that_expired_meanwhile_is_logged_expired_not_answered_late(
    store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    seller = await shop(store, sim)
    pushed = offline_chat(sim, seller, "在吗")
    await store.record_inbound("a", [recorded(pushed, "在吗", age_ms=10 * 60_000)])  # older than message_expire

    engine = await make_engine()
    await running(engine)
    await eventually(lambda: _is(store, pushed, "expired"))
    await asyncio.sleep(0.5)
    assert sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]) == []


async def _is(store: Store, pushed: dict[str, Any], status: str) -> bool:
    return await _status(store, pushed) == status


async def test_a_reply_in_flight_at_the_crash_is_reported_interrupted_never_sent_twice(
    store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    seller = await shop(store, sim)
    pushed = offline_chat(sim, seller, "多少钱")
    await store.record_inbound("a", [recorded(pushed, "多少钱")])
    assert await store.begin_reply("a", pushed["message_id"], reply_source="default")  # then the process died

    engine = await make_engine()
    with engine.bus.listening(types={ReplyInterrupted}) as events:
        await running(engine)
        await eventually(lambda: _is(store, pushed, "interrupted"))
        event = await asyncio.wait_for(events.get(), 5)
    assert isinstance(event, ReplyInterrupted) and event.message_id == pushed["message_id"]
    await asyncio.sleep(0.5)
    assert sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]) == []
    logged = await row(store, pushed["chat_id"], pushed["message_id"])
    assert "may have reached the buyer" in (logged.reply_reason or "")


async def test_a_recorded_paid_order_never_applied_is_delivered_once_after_a_restart(
    store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    seller = await shop(store, sim)
    await store.replace_delivery_rules("a", [DeliveryRuleSpec("batch", lines=["卡密-0001", "卡密-0002"])])
    order = sim.push_order(seller["unb"], status="paid")
    assert order["delivered"] == 0
    event = {"order_id": order["order_id"], "status": "paid"}
    card = Inbound(
        order["message_id"], order["chat_id"], now_ms(), "[我已付款，等待你发货]", "order", order["buyer"],
        None, order["item_id"], event=event,
    )  # fmt: skip
    await store.record_inbound("a", [card])

    engine = await make_engine()
    await running(engine)
    cards = await eventually(
        lambda: [m for m in sim.sent(seller=seller["unb"], chat_id=order["chat_id"]) if "卡密" in (m["text"] or "")]
    )
    await engine.orders.idle()
    await asyncio.sleep(0.5)
    assert [c["text"] for c in cards] == ["卡密-0001"]
    assert len([m for m in sim.sent(seller=seller["unb"]) if "卡密" in (m["text"] or "")]) == 1
    assert (await store.get_order("a", order["order_id"])).status == "paid"
    await eventually(lambda: _is(store, order, "applied"))


async def test_a_message_still_being_handled_at_a_reconnect_is_answered_once(
    store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    seller = await shop(store, sim, debounce=1.5)  # the handler waits out the debounce: in flight at the reconnect
    engine = await make_engine()
    await running(engine)
    pushed = sim.push_message(seller["unb"], "在不在")
    await eventually(lambda: _is(store, pushed, "received"))
    sim.set_fault("drop", seller=seller["unb"])
    await eventually(lambda: len([c for c in sim.connections(seller=seller["unb"]) if c["registered"]]) >= 2)
    await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]), timeout=10)
    await asyncio.sleep(1.0)
    assert len(sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])) == 1
