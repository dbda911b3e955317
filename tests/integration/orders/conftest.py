"""Fixtures for orders against the simulator: the engine fixtures with short delivery timings, a loopback HTTP
receiver (a seller's webhook, a notification target), and a live shop (account + item + delivery rules)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web

from xianyu_autoreply.config import Settings
from xianyu_autoreply.engine.notify import NotifyOptions
from xianyu_autoreply.engine.orders import DeliveryOptions
from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import DeliveryRuleSpec, Store

from ..engine.conftest import FAST_OPTIONS, EngineFactory, engines_on, eventually
from ..engine.conftest import settings as settings  # noqa: PLC0414 (re-exported fixture)
from ..engine.conftest import sim as sim  # noqa: PLC0414
from ..engine.conftest import store as store  # noqa: PLC0414

FAST_DELIVERY = DeliveryOptions(
    max_attempts=3,
    retry_base=0.1,
    retry_cap=0.3,
    sweep_interval=0.2,
    stale_after=1.0,
    send_wait=2.0,
    unit_gap=0.05,
    webhook_timeout=0.5,
    webhook_attempts=2,
    confirm_attempts=2,
    title_timeout=2.0,
)
ORDER_OPTIONS = replace(FAST_OPTIONS, delivery=FAST_DELIVERY, notify=NotifyOptions(timeout=5.0, fold_seconds=0.0))


@pytest.fixture
async def make_engine(store: Store, settings: Settings) -> AsyncIterator[EngineFactory]:
    """Start engines on the test's store (optionally with other options); every one is stopped at the end."""
    async with engines_on(store, settings, ORDER_OPTIONS) as make:
        yield make


@pytest.fixture
async def engine(make_engine: EngineFactory) -> AccountScheduler:
    return await make_engine()


Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """A loopback HTTP server recording every POST; `handler` decides the answer (200 "ok" by default)."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    handler: Handler | None = None

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r["json"] for r in self.requests if path is None or r["path"] == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recorded = Receiver()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = await request.json()
        except ValueError:
            body = raw.decode(errors="replace")
        entry = {"path": request.path, "json": body, "headers": dict(request.headers)}
        recorded.requests.append(entry)
        if recorded.handler is not None:
            return await recorded.handler(request, entry)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    recorded.url = f"http://127.0.0.1:{port}"
    try:
        yield recorded
    finally:
        await runner.cleanup()


@dataclass
class Shop:
    """One live account on the simulator with an item to sell."""

    account_id: str
    seller: dict[str, Any]
    item: dict[str, Any]

    @property
    def unb(self) -> str:
        return str(self.seller["unb"])


async def open_shop(
    engine: AccountScheduler,
    sim: Simulator,
    rules: list[DeliveryRuleSpec] | None = None,
    *,
    account_id: str = "a",
    owner: str | None = None,
    auto_confirm: bool = False,
    title: str = "视频会员月卡",
) -> Shop:
    """An account running on `engine`, an item of it, and its delivery rules (item-bound when not said)."""
    seller = sim.create_seller(nick=f"店{account_id}")
    await engine.add(account_id, seller["cookie"], owner=owner)
    item = sim.create_item(seller["unb"], title=title, price="9.9")
    if auto_confirm:
        await engine.update_account(account_id, auto_confirm=True)
    if rules:
        bound = [r if r.item_id or r.title_keyword else replace(r, item_id=item["item_id"]) for r in rules]
        await engine.set_delivery_rules(account_id, bound)
    await eventually(lambda: engine.state(account_id).lifecycle is Lifecycle.RUNNING)
    return Shop(account_id, seller, item)


def sent_texts(sim: Simulator, shop: Shop, chat_id: str) -> list[str]:
    return [s["text"] for s in sim.sent(seller=shop.unb, chat_id=chat_id)]


async def settle(seconds: float = 0.5) -> None:
    """Give the engine time to do what it must not do (a second delivery)."""
    await asyncio.sleep(seconds)


__all__ = ["eventually"]
