"""SIGKILL an engine process at seeded random points of busy traffic (buyer messages + cookie updates), 20 rounds.

After each kill: `PRAGMA integrity_check` is ok; the restarted engine answers none of the old messages again (the
platform re-sends them with the same ids) and answers new ones exactly once; every message that got a reply is in
the committed log (its claim committed before the reply was sent); each cookie is the old or the new one.
Paid orders with a batch delivery rule arrive among the messages: no order ever gets two cards and no card goes to
two orders (simulator's sent log and the store's stock agree); after the restart (and the platform re-sending the
paid events) every order gets exactly one card, except a unit whose send was in flight at the kill: that one is
marked `delivery_failed` (interrupted), never sent blindly again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import textwrap
from asyncio.subprocess import PIPE
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from xianyu_autoreply.config import Settings
from xianyu_autoreply.engine.scheduler import Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, DeliveryRuleSpec, DeliveryState, Store

from ..integration.engine.conftest import eventually
from ..integration.engine.conftest import settings as settings  # noqa: PLC0414 (re-exported fixtures)
from ..integration.engine.conftest import sim as sim  # noqa: PLC0414
from ..integration.engine.conftest import store as store  # noqa: PLC0414
from ..integration.orders.conftest import EngineFactory
from ..integration.orders.conftest import make_engine as make_engine  # noqa: PLC0414 (delivery timings shortened)

ROUNDS = 20
ACCOUNTS = 4
LINES = 40  # cards per account, more than a round sells
ORDER_SHARE = 0.3  # of the buyer events before the kill, this share are paid orders

# The engine under test, in a process of its own: serves the accounts and keeps replacing their cookies.
ENGINE = textwrap.dedent(
    """
    import asyncio, json, sys
    from xianyu_autoreply.config import load_settings
    from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
    from xianyu_autoreply.store import Store
    from xianyu_autoreply.log import configure_logging
    from tests.integration.orders.conftest import ORDER_OPTIONS

    async def main():
        spec = json.loads(sys.argv[1])
        configure_logging(level="WARNING")  # to stderr (a file): stdout carries only "ready"
        settings = load_settings(data_dir=spec["data_dir"], database_url=spec["url"], platform=spec["platform"])
        store = await Store.open(settings, migrate=False)
        engine = AccountScheduler(store=store, settings=settings, options=ORDER_OPTIONS)
        await engine.start()
        while not all(engine.state(a).lifecycle is Lifecycle.RUNNING for a in spec["cookies"]):
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        n = 0
        while True:
            for account_id, versions in spec["cookies"].items():
                await store.update_cookie(account_id, versions[n % 2])
                await asyncio.sleep(0.01)
            n += 1

    asyncio.run(main())
    """
)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the raw-file integrity check is SQLite's (PostgreSQL commits are covered by the store tests)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'xianyu.db'}"


def sent_to(sim: Simulator, seller: dict[str, Any], chat_id: str) -> int:
    return len(sim.sent(seller=seller["unb"], chat_id=chat_id))


def card_lines(account_id: str) -> list[str]:
    return [f"{account_id}-卡{n:02d}" for n in range(LINES)]


def cards(sim: Simulator, seller: dict[str, Any], order: dict[str, Any]) -> list[str]:
    """The cards the buyer of `order` got in its chat."""
    own = set(card_lines(order["account"]))
    return [m["text"] for m in sim.sent(seller=seller["unb"], chat_id=order["chat_id"]) if m["text"] in own]


def no_card_twice(sim: Simulator) -> None:
    given = Counter(m["text"] for m in sim.sent() if "-卡" in m["text"])
    assert max(given.values(), default=1) == 1, f"cards given twice: {[c for c, n in given.items() if n > 1]}"


async def order_settled(store: Store, sim: Simulator, seller: dict[str, Any], order: dict[str, Any]) -> bool:
    """One card given, or the unit given up as interrupted (in flight at the kill: maybe sent, never re-sent)."""
    if cards(sim, seller, order):
        return True
    deliveries = await store.get_deliveries(order["account"], order["order_id"])
    return any(d.state is DeliveryState.DELIVERY_FAILED for d in deliveries)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed", range(ROUNDS))
async def test_sigkill_during_busy_traffic_loses_and_repeats_nothing(
    seed: int, settings: Settings, store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    rng = random.Random(seed)
    sellers: dict[str, dict[str, Any]] = {}
    cookies: dict[str, list[str]] = {}
    for i in range(ACCOUNTS):
        seller = sim.create_seller()
        account_id = f"acc{i}"
        sellers[account_id] = seller
        await store.create_account(account_id, seller["cookie"])
        await store.put_settings(account_id, AccountSettings(default_reply="在的"))
        cookies[account_id] = [f"{seller['cookie']}; v=old", f"{seller['cookie']}; v=new{'y' * 100}"]
        await store.replace_delivery_rules(account_id, [DeliveryRuleSpec("batch", lines=card_lines(account_id))])
    platform = {"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url}
    spec = {"data_dir": str(settings.data_dir), "url": settings.database_url, "cookies": cookies, "platform": platform}
    env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
    errors = settings.data_dir / "engine.stderr"
    with errors.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ENGINE, json.dumps(spec), stdout=PIPE, stderr=stderr, env=env, cwd=Path.cwd()
        )
    pushed: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.strip() == b"ready", errors.read_text()
        kill_after = rng.uniform(0.1, 1.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + kill_after
        while loop.time() < deadline:  # buyers keep writing until the kill
            account_id = rng.choice(list(sellers))
            if rng.random() < ORDER_SHARE:
                orders.append({**sim.push_order(sellers[account_id]["unb"], status="paid"), "account": account_id})
            else:
                answer = sim.push_message(sellers[account_id]["unb"], f"在吗 {len(pushed)}")
                pushed.append({**answer, "account": account_id})
            await asyncio.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    db_file = Path(settings.database_url.split("///", 1)[1])
    with sqlite3.connect(db_file) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for account_id, versions in cookies.items():  # the first update may not have committed before an early kill
        assert await store.get_account_cookie(account_id) in [sellers[account_id]["cookie"], *versions]
    answered_before = {m["message_id"]: sent_to(sim, sellers[m["account"]], m["chat_id"]) for m in pushed}
    assert max(answered_before.values(), default=0) <= 1
    for message in pushed:  # answered means claimed, and the claim was committed first
        if answered_before[message["message_id"]]:
            logged = await store.list_messages(message["account"], chat_id=message["chat_id"])
            assert message["message_id"] in {m.message_id for m in logged}, message
    cards_before = {o["order_id"]: cards(sim, sellers[o["account"]], o) for o in orders}
    assert all(len(c) <= 1 for c in cards_before.values()), cards_before
    no_card_twice(sim)
    for order in orders:  # a card given means its unit was claimed and its attempt committed before the send
        if cards_before[order["order_id"]]:
            deliveries = await store.get_deliveries(order["account"], order["order_id"])
            assert [d.attempts >= 1 for d in deliveries] == [True], deliveries  # its line: reserved

    engine = await make_engine()
    await eventually(lambda: all(engine.state(a).lifecycle is Lifecycle.RUNNING for a in sellers), timeout=60)
    await eventually(lambda: all(engine.session(a) is not None and engine.session(a).connected for a in sellers))  # type: ignore[union-attr]
    for message in pushed:  # the platform re-sends the old ones: they were answered already (or expired for good)
        sim.push_message(
            sellers[message["account"]]["unb"],
            "在吗 again",
            chat_id=message["chat_id"],
            buyer=message["buyer"],
            message_id=message["message_id"],
        )
    for order in orders:  # and the paid events
        sim.push_order(sellers[order["account"]]["unb"], status="paid", order_id=order["order_id"])
    fresh = [
        {**sim.push_message(seller["unb"], "新消息"), "account": account_id} for account_id, seller in sellers.items()
    ]
    fresh_orders = [
        {**sim.push_order(seller["unb"], status="paid"), "account": account_id}
        for account_id, seller in sellers.items()
    ]
    await eventually(lambda: all(sent_to(sim, sellers[m["account"]], m["chat_id"]) == 1 for m in fresh), timeout=60)

    async def orders_settled() -> bool:
        return all([await order_settled(store, sim, sellers[o["account"]], o) for o in orders + fresh_orders])

    await eventually(orders_settled, timeout=30, interval=0.2)
    await asyncio.sleep(0.5)  # room for a second reply or card to show up
    for message in pushed:
        replies = sent_to(sim, sellers[message["account"]], message["chat_id"])
        if answered_before[message["message_id"]]:
            assert replies == 1, ("answered again after the restart", message)
        assert replies <= 1, message

    for order in fresh_orders:
        assert len(cards(sim, sellers[order["account"]], order)) == 1, order
    for order in orders:
        got = cards(sim, sellers[order["account"]], order)
        assert len(got) <= 1, ("delivered twice", order, got)
        assert got == cards_before[order["order_id"]] or not cards_before[order["order_id"]], order
    no_card_twice(sim)
    for account_id, seller in sellers.items():
        deliveries = [
            d for o in orders + fresh_orders if o["account"] == account_id
            for d in await store.get_deliveries(account_id, o["order_id"])
        ]  # fmt: skip
        held = [d.stock_line_id for d in deliveries if d.stock_line_id is not None]
        assert len(held) == len(set(held)), deliveries
        (rule,) = await store.list_delivery_rules(account_id)
        stock = rule.stock
        assert stock.available + stock.reserved + stock.delivered == LINES, stock
        # Every card the buyers got left the available stock; a kill between committing the line and recording
        # the unit as sent leaves a delivered line on an interrupted unit (delivered >= sent), never a reusable one.
        given = sum(len(cards(sim, seller, o)) for o in orders + fresh_orders if o["account"] == account_id)
        assert sum(d.state is DeliveryState.SENT for d in deliveries) <= stock.delivered, (stock, deliveries)
        assert given <= stock.delivered + stock.reserved <= sum(d.attempts >= 1 for d in deliveries), (stock, given)
