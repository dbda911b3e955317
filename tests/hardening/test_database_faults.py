"""A database write that fails on the hot path (a full disk, a lost PostgreSQL connection): nothing is sent that
was not durably claimed, the account keeps running, and the next message (or the platform's re-sent event) is
served exactly once. The failure is injected at the store's seam, the one place every claim goes through."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, DatabaseError, DeliveryRuleSpec, DeliveryState, Store

from ..integration.engine.conftest import eventually
from ..integration.engine.conftest import settings as settings  # noqa: PLC0414 (re-exported fixtures)
from ..integration.engine.conftest import sim as sim  # noqa: PLC0414
from ..integration.engine.conftest import store as store  # noqa: PLC0414
from ..integration.orders.conftest import EngineFactory
from ..integration.orders.conftest import engine as engine  # noqa: PLC0414 (delivery timings shortened)
from ..integration.orders.conftest import make_engine as make_engine  # noqa: PLC0414

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the failure is injected above the driver, so the backend does not change what is tested."""
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'xianyu.db'}"


class Failing:
    """Wraps one store method: raises `DatabaseError` while `on`, like a disk that is full for a while."""

    def __init__(self, store: Store, name: str) -> None:
        self.real = getattr(store, name)
        self.on = True
        self.calls = 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.on:
            raise DatabaseError("database or disk is full (injected)")
        return await self.real(*args, **kwargs)


async def live_account(engine: AccountScheduler, sim: Simulator) -> dict[str, Any]:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await engine.set_settings("a", AccountSettings(default_reply="在的"))
    await eventually(lambda: engine.state("a").lifecycle is Lifecycle.RUNNING and engine.session("a") is not None)
    return seller


async def test_a_failed_message_record_is_not_acknowledged_and_is_answered_once_when_pushed_again(
    engine: AccountScheduler, sim: Simulator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller = await live_account(engine, sim)
    failing = Failing(store, "record_inbound")
    monkeypatch.setattr(store, "record_inbound", failing)
    lost = sim.push_message(seller["unb"], "在吗")
    await eventually(lambda: failing.calls >= 1)
    await asyncio.sleep(0.5)
    assert sim.sent(seller=seller["unb"], chat_id=lost["chat_id"]) == []  # not recorded: not answered
    assert sum(c["unacked"] for c in sim.connections(seller=seller["unb"]) if c["closed_ms"] is None) >= 1
    assert engine.state("a").lifecycle is Lifecycle.RUNNING  # one failed write does not take the account down
    failing.on = False
    fresh = sim.push_message(seller["unb"], "在吗")
    await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=fresh["chat_id"]))
    sim.push_message(
        seller["unb"], "在吗", chat_id=fresh["chat_id"], buyer=fresh["buyer"], message_id=fresh["message_id"]
    )
    await asyncio.sleep(0.5)
    assert len(sim.sent(seller=seller["unb"], chat_id=fresh["chat_id"])) == 1
    sim.set_fault("drop", seller=seller["unb"])  # after the reconnect the platform pushes the unACKed one again
    await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=lost["chat_id"]), timeout=15)
    await asyncio.sleep(0.5)
    assert len(sim.sent(seller=seller["unb"], chat_id=lost["chat_id"])) == 1


async def test_a_failed_delivery_claim_sends_nothing_and_the_resent_paid_event_delivers_once(
    engine: AccountScheduler, sim: Simulator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller = await live_account(engine, sim)
    await engine.set_delivery_rules("a", [DeliveryRuleSpec("batch", lines=["CARD-1", "CARD-2"])])
    failing = Failing(store, "claim_delivery")
    monkeypatch.setattr(store, "claim_delivery", failing)
    paid = sim.push_order(seller["unb"], status="paid")
    await eventually(lambda: failing.calls >= 1)
    await asyncio.sleep(0.5)
    assert sim.sent(seller=seller["unb"], chat_id=paid["chat_id"]) == []
    assert await store.get_deliveries("a", paid["order_id"]) == []
    failing.on = False
    sim.push_order(seller["unb"], status="paid", order_id=paid["order_id"])  # the platform re-sends it

    async def sent() -> bool:
        deliveries = await store.get_deliveries("a", paid["order_id"])
        return [d.state for d in deliveries] == [DeliveryState.SENT]

    await eventually(sent)
    sim.push_order(seller["unb"], status="paid", order_id=paid["order_id"])
    await asyncio.sleep(0.5)
    assert [m["text"] for m in sim.sent(seller=seller["unb"], chat_id=paid["chat_id"])] == ["CARD-1"]
    (rule,) = await store.list_delivery_rules("a")
    assert (rule.stock.available, rule.stock.reserved, rule.stock.delivered) == (1, 0, 1)


async def test_a_restart_after_a_failed_delivery_claim_delivers_the_paid_order_once(
    make_engine: EngineFactory, sim: Simulator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await make_engine()
    seller = await live_account(first, sim)
    await first.set_delivery_rules("a", [DeliveryRuleSpec("text", content="goods")])
    failing = Failing(store, "claim_delivery")
    monkeypatch.setattr(store, "claim_delivery", failing)
    paid = sim.push_order(seller["unb"], status="paid")
    await eventually(lambda: failing.calls >= 1)
    await first.stop()
    failing.on = False
    await make_engine()  # its first sweep finds the paid order without a claim
    await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=paid["chat_id"]))
    await asyncio.sleep(0.5)
    assert [m["text"] for m in sim.sent(seller=seller["unb"], chat_id=paid["chat_id"])] == ["goods"]


async def test_every_inbound_message_is_logged_once_answered_or_not(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    """At-least-once recording: an expired message is logged (not answered), an answered one is logged before its
    reply, and a re-delivered copy (same message id) adds no second row."""
    seller = await live_account(engine, sim)
    yesterday = int(time.time() * 1000) - 86_400_000
    old = sim.push_message(seller["unb"], "昨天的问题", created_ms=yesterday)
    new = sim.push_message(seller["unb"], "还在吗")
    await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=new["chat_id"]))
    for message, created_ms in ((old, yesterday), (new, None)):  # the platform delivers both again
        sim.push_message(
            seller["unb"], "again", chat_id=message["chat_id"], buyer=message["buyer"],
            message_id=message["message_id"], created_ms=created_ms,
        )  # fmt: skip
    await asyncio.sleep(0.5)
    await engine.stop()  # flushes the queued outcomes (decisions and reply records)

    async def logged(message: dict[str, Any]) -> list[Any]:
        rows = await store.list_messages("a", chat_id=message["chat_id"])
        return [m for m in rows if m.message_id == message["message_id"]]  # (the echo of our reply is its own row)

    (logged_old,) = await logged(old)
    (logged_new,) = await logged(new)
    assert logged_old.direction == "in" and logged_old.status == "expired"
    assert logged_new.direction == "in" and logged_new.status != "expired"
    assert sim.sent(seller=seller["unb"], chat_id=old["chat_id"]) == []
    assert len(sim.sent(seller=seller["unb"], chat_id=new["chat_id"])) == 1
