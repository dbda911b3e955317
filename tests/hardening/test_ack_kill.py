"""Nothing acknowledged is ever lost: SIGKILL the engine at the ACK of a push (and at other points of the push path).

The platform never pushes an ACKed message again; a push that was not ACKed comes again on the account's next
connection (the simulator does both, see its README). So a message or paid order survives a kill only if it was
durably recorded before its ACK left, and the restarted engine resumed it from the record.

Each kill comes from inside the simulator (a hook on the ACK it receives, or on the reply), so it lands at exactly
that point of the push path, not "about then". After the restart no test pushes anything again: what the buyers
get is what the engine recovered by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import textwrap
from asyncio.subprocess import PIPE
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from xianyu_autoreply.config import Settings
from xianyu_autoreply.engine.scheduler import Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.simulator.im import Connection
from xianyu_autoreply.simulator.world import SentMessage
from xianyu_autoreply.store import AccountSettings, DeliveryRuleSpec, DeliveryState, Store

from ..integration.engine.conftest import eventually
from ..integration.engine.conftest import settings as settings  # noqa: PLC0414 (re-exported fixtures)
from ..integration.engine.conftest import sim as sim  # noqa: PLC0414
from ..integration.engine.conftest import store as store  # noqa: PLC0414
from ..integration.orders.conftest import EngineFactory
from ..integration.orders.conftest import make_engine as make_engine  # noqa: PLC0414

REPLY = "在的，亲"
ROUNDS = 20

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
        configure_logging(level="WARNING")
        settings = load_settings(data_dir=spec["data_dir"], database_url=spec["url"], platform=spec["platform"])
        store = await Store.open(settings, migrate=False)
        engine = AccountScheduler(store=store, settings=settings, options=ORDER_OPTIONS)
        await engine.start()
        while not all(engine.state(a).lifecycle is Lifecycle.RUNNING for a in spec["accounts"]):
            await asyncio.sleep(0.05)
        while not all(engine.session(a) is not None and engine.session(a).connected for a in spec["accounts"]):
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


class Engine:
    """The engine under test in a process of its own, and a way to SIGKILL it from inside the simulator."""

    def __init__(self, settings: Settings, sim: Simulator, accounts: list[str]) -> None:
        platform = {"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url}
        self.spec = {
            "data_dir": str(settings.data_dir),
            "url": settings.database_url,
            "accounts": accounts,
            "platform": platform,
        }
        self.errors = settings.data_dir / "engine.stderr"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
        self.errors.parent.mkdir(parents=True, exist_ok=True)
        with self.errors.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", ENGINE, json.dumps(self.spec), stdout=PIPE, stderr=stderr, env=env, cwd=Path.cwd()
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line.strip() == b"ready", self.errors.read_text()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            os.kill(self.proc.pid, signal.SIGKILL)

    async def killed(self) -> None:
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), 10)
        assert self.proc.returncode == -signal.SIGKILL, self.errors.read_text()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def engine_process(settings: Settings, sim: Simulator) -> AsyncIterator[Callable[[list[str]], Engine]]:
    made: list[Engine] = []

    def make(accounts: list[str]) -> Engine:
        made.append(Engine(settings, sim, accounts))
        return made[-1]

    yield make
    for engine in made:
        await engine.close()


def kill_on_ack(sim: Simulator, engine: Engine, *, nth: int = 1) -> None:
    """SIGKILL the engine the moment the simulator receives its `nth` ACK from now on (before counting it)."""
    real = sim.hub.ack
    seen = 0

    def ack(conn: Connection, mid: str | None) -> None:
        nonlocal seen
        seen += 1
        if seen == nth:
            engine.kill()
        real(conn, mid)

    sim.hub.ack = ack  # type: ignore[method-assign]


def kill_on_send(sim: Simulator, engine: Engine, *, nth: int = 1) -> None:
    """SIGKILL the engine the moment the simulator accepts its `nth` send from now on."""
    real = sim.world.record_sent
    seen = 0

    def record(message: SentMessage) -> None:
        nonlocal seen
        real(message)
        seen += 1
        if seen == nth:
            engine.kill()

    sim.world.record_sent = record  # type: ignore[method-assign]


async def open_shops(store: Store, sim: Simulator, count: int) -> dict[str, dict[str, Any]]:
    sellers = {}
    for i in range(count):
        seller = sim.create_seller(nick=f"杀店{i}")
        account_id = f"acc{i}"
        await store.create_account(account_id, seller["cookie"])
        await store.put_settings(account_id, AccountSettings(default_reply=REPLY))
        lines = [f"{account_id}-卡{n:02d}" for n in range(60)]
        await store.replace_delivery_rules(account_id, [DeliveryRuleSpec("batch", lines=lines)])
        sellers[account_id] = seller
    return sellers


def replies(sim: Simulator, seller: dict[str, Any], chat_id: str) -> list[str]:
    return [m["text"] for m in sim.sent(seller=seller["unb"], chat_id=chat_id) if m["text"] == REPLY]


def cards(sim: Simulator, seller: dict[str, Any], chat_id: str) -> list[str]:
    return [m["text"] for m in sim.sent(seller=seller["unb"], chat_id=chat_id) if "-卡" in (m["text"] or "")]


async def restarted(make_engine: EngineFactory, accounts: list[str]) -> None:
    engine = await make_engine()
    await eventually(lambda: all(engine.state(a).lifecycle is Lifecycle.RUNNING for a in accounts), timeout=60)


async def test_sigkill_at_the_ack_of_a_paid_push_delivers_exactly_once_after_the_restart(
    store: Store, sim: Simulator, engine_process: Callable[[list[str]], Engine], make_engine: EngineFactory
) -> None:
    sellers = await open_shops(store, sim, 1)
    (seller,) = sellers.values()
    engine = engine_process(list(sellers))
    await engine.start()
    kill_on_ack(sim, engine)
    order = sim.push_order(seller["unb"], status="paid")
    assert order["delivered"] == 1
    await engine.killed()

    await restarted(make_engine, list(sellers))
    await eventually(lambda: cards(sim, seller, order["chat_id"]), timeout=30)
    await asyncio.sleep(1.0)  # room for a second card
    assert len(cards(sim, seller, order["chat_id"])) == 1
    (delivery,) = await store.get_deliveries("acc0", order["order_id"])
    assert delivery.state is DeliveryState.SENT


async def test_sigkill_at_the_ack_of_a_buyer_message_answers_exactly_once_after_the_restart(
    store: Store, sim: Simulator, engine_process: Callable[[list[str]], Engine], make_engine: EngineFactory
) -> None:
    sellers = await open_shops(store, sim, 1)
    (seller,) = sellers.values()
    engine = engine_process(list(sellers))
    await engine.start()
    kill_on_ack(sim, engine)
    pushed = sim.push_message(seller["unb"], "还有货吗")
    await engine.killed()

    await restarted(make_engine, list(sellers))
    await eventually(lambda: replies(sim, seller, pushed["chat_id"]), timeout=30)
    await asyncio.sleep(1.0)
    assert replies(sim, seller, pushed["chat_id"]) == [REPLY]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", range(ROUNDS))
async def test_sigkill_at_random_points_of_the_push_path_loses_and_repeats_nothing(
    seed: int,
    settings: Settings,
    store: Store,
    sim: Simulator,
    engine_process: Callable[[list[str]], Engine],
    make_engine: EngineFactory,
) -> None:
    if "postgresql" in settings.database_url and seed >= 4:
        pytest.skip("4 PostgreSQL rounds; the 20 seeded rounds run on SQLite")
    rng = random.Random(seed)
    sellers = await open_shops(store, sim, 3)
    engine = engine_process(list(sellers))
    await engine.start()
    point = ("queued", "ack", "send", "time")[seed % 4]
    if point == "ack":
        kill_on_ack(sim, engine, nth=rng.randint(1, 12))
    elif point == "send":
        kill_on_send(sim, engine, nth=rng.randint(1, 8))
    elif point == "time":
        asyncio.get_running_loop().call_later(rng.uniform(0.01, 0.3), engine.kill)
    kill_after = rng.randint(1, 15)  # "queued": right after this many pushes were made

    messages: list[tuple[str, dict[str, Any]]] = []
    orders: list[tuple[str, dict[str, Any]]] = []
    assert engine.proc is not None
    while engine.proc.returncode is None and len(messages) + len(orders) < 40:
        account_id = rng.choice(list(sellers))
        unb = sellers[account_id]["unb"]
        if rng.random() < 0.3:
            orders.append((account_id, sim.push_order(unb, status="paid")))
        else:
            messages.append((account_id, sim.push_message(unb, f"在吗 {len(messages)}")))
        if point == "queued" and len(messages) + len(orders) == kill_after:
            engine.kill()
            break
        await asyncio.sleep(rng.uniform(0.0, 0.02))
    engine.kill()  # at the latest when the pushes are done
    await engine.killed()
    pushed_messages = [(a, m) for a, m in messages if m["delivered"]]
    pushed_orders = [(a, o) for a, o in orders if o["delivered"]]

    await restarted(make_engine, list(sellers))

    async def flagged_interrupted(account_id: str, message: dict[str, Any]) -> bool:
        logged = await store.list_messages(account_id, chat_id=message["chat_id"])
        return any(m.message_id == message["message_id"] and m.status == "interrupted" for m in logged)

    async def order_settled(account_id: str, order: dict[str, Any]) -> bool:
        if cards(sim, sellers[account_id], order["chat_id"]):
            return True
        deliveries = await store.get_deliveries(account_id, order["order_id"])
        return any(d.state is DeliveryState.DELIVERY_FAILED for d in deliveries)

    async def settled() -> bool:
        for account_id, message in pushed_messages:
            if not replies(sim, sellers[account_id], message["chat_id"]) and not await flagged_interrupted(
                account_id, message
            ):
                return False
        return all([await order_settled(a, o) for a, o in pushed_orders])

    try:
        await eventually(settled, timeout=45, interval=0.2)
    except AssertionError:
        for account_id, message in pushed_messages:
            if not replies(sim, sellers[account_id], message["chat_id"]):
                logged = await store.list_messages(account_id, chat_id=message["chat_id"])
                print("unanswered", account_id, message, [(m.message_id, m.direction, m.status) for m in logged])
        for account_id, order in pushed_orders:
            if not await order_settled(account_id, order):
                print("unsettled", account_id, order, await store.get_deliveries(account_id, order["order_id"]))
        print(engine.errors.read_text()[-3000:])
        raise
    await asyncio.sleep(1.0)  # room for a second reply or card to show up

    answered = Counter(len(replies(sim, sellers[a], m["chat_id"])) for a, m in pushed_messages)
    delivered = Counter(len(cards(sim, sellers[a], o["chat_id"])) for a, o in pushed_orders)
    interrupted = [m for a, m in pushed_messages if not replies(sim, sellers[a], m["chat_id"])]
    print(
        f"\nseed {seed} ({point}): {len(pushed_messages)} messages answered {dict(answered)}, "
        f"{len(pushed_orders)} orders delivered {dict(delivered)}, interrupted while sending {len(interrupted)}"
    )
    assert max(answered, default=0) <= 1, ("answered twice", answered)
    assert max(delivered, default=0) <= 1, ("delivered twice", delivered)
    given = Counter(m["text"] for m in sim.sent() if "-卡" in (m["text"] or ""))
    assert max(given.values(), default=1) == 1, "a card went to two orders"
    # Lost: 0. A message without a reply was flagged as interrupted (its reply was on the wire at the kill: it may
    # have reached the buyer, so it is never sent twice) -- at most the sends in flight at that instant, about one
    # per account (a loaded machine makes each send last longer; the old bound of 2 failed on 3 accounts).
    assert len(interrupted) <= len(sellers), interrupted
