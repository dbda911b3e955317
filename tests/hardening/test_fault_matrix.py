"""Every simulator fault kind on 100 live accounts while buyers keep writing, one after another and overlapping.

After each phase: every buyer message pushed once the fault is over is answered exactly once, no message is ever
answered twice, messages that reached a still-working connection during the fault are answered exactly once, every
account is back to `running` (or `auth_expired` where the login itself was lost), and no task or socket leaked.
Paid orders flow too (every account sells from a batch rule of its own): each order gets at most one card, exactly
one where it reached a working connection, and no card ever goes to two orders (the simulator's sent log and the
store's stock and deliveries agree).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xianyu_autoreply.config import load_settings
from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, DeliveryRuleSpec, DeliveryState, Store

from ..integration.engine.conftest import eventually
from ..integration.orders.conftest import ORDER_OPTIONS

ACCOUNTS = 100
REPLY = "在的，请问需要什么"
ORDER_EVERY = 4  # each buyer round, a paid order to every 4th account (rotating): ~6 orders per account in all
LINES = 12  # cards per account, more than it will sell
pytestmark = pytest.mark.timeout(300)


@dataclass
class World:
    sim: Simulator
    engine: AccountScheduler
    store: Store
    sellers: dict[str, dict[str, Any]]  # account id -> simulator seller
    pushed: list[dict[str, Any]] = field(default_factory=list)  # every buyer message: push answer + "exact"
    orders: list[dict[str, Any]] = field(default_factory=list)  # every paid order: push answer + "exact"
    rounds: int = 0

    def group(self, start: int, size: int = 20) -> list[str]:
        return list(self.sellers)[start : start + size]


def sockets() -> int:
    """Open sockets of this process (simulator and client sides both live here)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    sim = Simulator()
    await sim.start(host="127.0.0.1", port=0)
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'xianyu.db'}",
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        # A heavily loaded machine must not look like a silent connection; `silence` lasts longer than this.
        session={"heartbeat_interval": 1.0, "heartbeat_timeout": 5.0},
    )
    store = await Store.open(settings)
    engine = AccountScheduler(store=store, settings=settings, options=ORDER_OPTIONS)
    await engine.start()
    sellers: dict[str, dict[str, Any]] = {}
    try:
        for n in range(ACCOUNTS):
            seller = sim.create_seller(nick=f"店{n}")
            account_id = f"acc{n:03d}"
            sellers[account_id] = seller
            await engine.add(account_id, seller["cookie"])
            await engine.set_settings(account_id, AccountSettings(default_reply=REPLY))
            await engine.set_delivery_rules(account_id, [DeliveryRuleSpec("batch", lines=card_lines(account_id))])
        yield World(sim, engine, store, sellers)
    finally:
        await engine.stop()
        await store.close()
        await sim.stop()


def card_lines(account_id: str) -> list[str]:
    return [f"{account_id}-卡{n:02d}" for n in range(LINES)]


def live(world: World, account_id: str) -> bool:
    session = world.engine.session(account_id)
    return world.engine.state(account_id).lifecycle is Lifecycle.RUNNING and session is not None and session.connected


async def all_running(world: World, *, expect: Callable[[str], Lifecycle] | None = None) -> None:
    def ready() -> bool:
        for account_id in world.sellers:
            wanted = expect(account_id) if expect else Lifecycle.RUNNING
            if wanted is Lifecycle.RUNNING and not live(world, account_id):
                return False
            if wanted is not Lifecycle.RUNNING and world.engine.state(account_id).lifecycle is not wanted:
                return False
        return True

    await eventually(ready, timeout=90, interval=0.2)


def push_round(world: World, *, exact: bool, only: list[str] | None = None) -> None:
    """One buyer message (a new chat) to every account and a paid order to every 4th; `exact`: each must be
    answered (delivered) exactly once."""
    targets = only or list(world.sellers)
    for account_id in targets:
        answer = world.sim.push_message(world.sellers[account_id]["unb"], f"还在吗 {len(world.pushed)}")
        world.pushed.append({**answer, "account": account_id, "exact": exact and answer["delivered"] > 0})
    for n, account_id in enumerate(targets):
        if n % ORDER_EVERY == world.rounds % ORDER_EVERY:
            order = world.sim.push_order(world.sellers[account_id]["unb"], status="paid")
            world.orders.append({**order, "account": account_id, "exact": exact and order["delivered"] > 0})
    world.rounds += 1


def replies(world: World, message: dict[str, Any]) -> int:
    seller = world.sellers[message["account"]]["unb"]
    return len(world.sim.sent(seller=seller, chat_id=message["chat_id"]))


async def check_replies(world: World) -> None:
    """Exactly once where promised (waited for), at most once everywhere."""
    await eventually(lambda: all(replies(world, m) >= 1 for m in world.pushed if m["exact"]), timeout=90, interval=0.3)
    await asyncio.sleep(1.0)  # room for a duplicate to show up
    twice = [m for m in world.pushed if replies(world, m) > 1]
    assert not twice, f"{len(twice)} messages answered more than once, e.g. {twice[0]}"
    missing = [m for m in world.pushed if m["exact"] and replies(world, m) != 1]
    assert not missing, f"{len(missing)} messages unanswered, e.g. {missing[0]}"


def cards(world: World, order: dict[str, Any]) -> list[str]:
    """The cards the buyer of `order` got in its chat."""
    seller = world.sellers[order["account"]]["unb"]
    own = set(card_lines(order["account"]))
    return [m["text"] for m in world.sim.sent(seller=seller, chat_id=order["chat_id"]) if m["text"] in own]


async def check_orders(world: World) -> None:
    """At most one card per order and per card, exactly one card where the order reached a working connection."""
    await eventually(lambda: all(cards(world, o) for o in world.orders if o["exact"]), timeout=90, interval=0.3)
    twice = [o for o in world.orders if len(cards(world, o)) > 1]
    assert not twice, f"{len(twice)} orders delivered more than once, e.g. {twice[0]}"
    given = Counter(m["text"] for m in world.sim.sent() if "-卡" in m["text"])
    assert max(given.values(), default=1) == 1, f"cards given twice: {[c for c, n in given.items() if n > 1]}"


async def check_order_store(world: World) -> None:
    """The store agrees with the platform: sent units hold distinct lines, the stock counts add up."""
    by_account: dict[str, list[Any]] = {}
    for order in world.orders:
        deliveries = await world.store.get_deliveries(order["account"], order["order_id"])
        assert len(deliveries) <= 1, deliveries
        got = cards(world, order)
        if order["exact"]:
            assert [d.state for d in deliveries] == [DeliveryState.SENT] and len(got) == 1, (order, deliveries)
        if any(d.state is DeliveryState.SENT for d in deliveries):
            assert len(got) == 1, (order, deliveries)  # recorded as sent means the buyer has exactly one card
        by_account.setdefault(order["account"], []).extend(deliveries)
    for account_id, deliveries in by_account.items():
        held = [d.stock_line_id for d in deliveries if d.stock_line_id is not None]
        assert len(held) == len(set(held)), (account_id, deliveries)
        (rule,) = await world.store.list_delivery_rules(account_id)
        sent = sum(d.state is DeliveryState.SENT for d in deliveries)
        assert rule.stock.delivered == sent, (account_id, rule.stock, deliveries)
        assert rule.stock.available + rule.stock.reserved + rule.stock.delivered == LINES, (account_id, rule.stock)


async def check_no_leaks(baseline_tasks: int, baseline_sockets: int) -> None:
    # Slack for the few tasks/sockets of work in flight (a heartbeat, a pooled MTOP connection being replaced).
    await eventually(lambda: len(asyncio.all_tasks()) <= baseline_tasks + 10, timeout=60, interval=0.5)
    await eventually(lambda: sockets() <= baseline_sockets + 20, timeout=60, interval=0.5)


def fault(world: World, kind: str, accounts: list[str] | None, **kwargs: Any) -> None:
    if accounts is None:
        world.sim.set_fault(kind, **kwargs)
        return
    for account_id in accounts:
        world.sim.set_fault(kind, seller=world.sellers[account_id]["unb"], **kwargs)


async def phase(world: World, name: str, start: Callable[[], None], *, hold: float, exact_during: bool) -> None:
    """Fault on, buyers write, fault off, buyers write again; then the reply invariants."""
    start()
    await asyncio.sleep(0.3)
    push_round(world, exact=exact_during)
    await asyncio.sleep(hold)
    world.sim.clear_faults()
    await all_running(world)
    push_round(world, exact=True)
    await check_replies(world)
    await check_orders(world)


async def test_every_fault_kind_one_after_another_and_overlapping(world: World) -> None:
    await all_running(world)
    # Warm-up: a token refresh for all, so that pooled MTOP connections are part of the baseline.
    await phase(world, "expire_token", lambda: fault(world, "expire_token", None), hold=0.5, exact_during=False)
    baseline_tasks, baseline_sockets = len(asyncio.all_tasks()), sockets()
    g = world.group
    phases: list[tuple[str, Callable[[], None], float, bool]] = [
        ("drop", lambda: fault(world, "drop", None), 0.5, False),
        ("close 1011 window", lambda: fault(world, "close", g(0), code=1011, seconds=2), 2.0, False),
        ("garbage", lambda: fault(world, "garbage", None), 0.5, True),
        ("silence", lambda: fault(world, "silence", g(20), seconds=8), 8.0, False),
        ("slow", lambda: fault(world, "slow", g(40), delay=1.0, seconds=4), 4.0, True),
        ("reject_reg", lambda: (fault(world, "reject_reg", g(60), seconds=3), fault(world, "drop", g(60))), 3.0, False),
        ("refuse", lambda: (fault(world, "refuse", g(80), seconds=3), fault(world, "drop", g(80))), 3.0, False),
        (
            "risk_control",
            lambda: (fault(world, "risk_control", g(0), seconds=3), fault(world, "drop", g(0))),
            3.0,
            False,
        ),
        ("expire_token", lambda: fault(world, "expire_token", g(40)), 0.5, False),
        (
            "overlapping",
            lambda: (
                fault(world, "slow", g(20), delay=0.5, seconds=4),
                fault(world, "garbage", g(40), seconds=3),
                fault(world, "close", g(60), seconds=2),
                fault(world, "refuse", g(80), seconds=3),
                fault(world, "drop", g(80)),
                fault(world, "expire_token", g(0, 10)),
            ),
            4.0,
            False,
        ),
    ]
    for name, start, hold, exact in phases:
        await phase(world, name, start, hold=hold, exact_during=exact)
        await check_no_leaks(baseline_tasks, baseline_sockets)

    # A lost login: those accounts end in auth_expired (not a hot retry loop), the others keep running.
    lost = g(0, 5)
    fault(world, "session_expired", lost)
    fault(world, "drop", lost)
    await all_running(world, expect=lambda a: Lifecycle.AUTH_EXPIRED if a in lost else Lifecycle.RUNNING)
    push_round(world, exact=True, only=[a for a in world.sellers if a not in lost])
    await check_replies(world)
    # The operator logs in again (here: the fault ends) and gives the cookie: back to running.
    world.sim.clear_faults()
    for account_id in lost:
        await world.engine.update_cookie(account_id, world.sellers[account_id]["cookie"] + "; v=2")
    await all_running(world)
    push_round(world, exact=True)
    await check_replies(world)
    await check_orders(world)
    await check_order_store(world)
    await check_no_leaks(baseline_tasks, baseline_sockets)
    answered = sum(1 for m in world.pushed if replies(world, m) == 1)
    delivered = sum(1 for o in world.orders if len(cards(world, o)) == 1)
    print(
        f"fault matrix: {len(phases) + 2} phases, {len(world.pushed)} buyer messages, {answered} answered; "
        f"{len(world.orders)} paid orders, {delivered} delivered once"
    )
