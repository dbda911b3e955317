"""`xianyu-autoreply demo`: the whole product on one machine, with nothing to configure.

The simulator plays the platform on loopback; the service (`run_server`: API, web admin, engine) runs on a fresh
SQLite database pointed at it; three demo shops get Chinese keyword rules, a default reply, and one of them AI
answers from the simulator's OpenAI-compatible endpoint; scripted buyers keep writing (and now and then pay for
an order). The console shows the admin URL and login, then the live conversation, buyer -> reply.
Everything stays on 127.0.0.1, so a newcomer can run it anywhere: `pip install -e . && xianyu-autoreply demo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from .api.auth import verify_password
from .api.server import RunningServer, run_server
from .config import Settings, load_settings
from .engine.events import Event, LifecycleChanged, MessageIn, ReplyFailed, ReplySent
from .engine.scheduler import AccountScheduler, Lifecycle
from .log import configure_logging
from .simulator import Simulator
from .store import AccountSettings, AiSettingsUpdate, Rule, Store

__all__ = ["DEMO_SHOPS", "DemoShop", "run_demo"]

DEFAULT_PORT = 8080
DEMO_ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class DemoShop:
    """One demo seller: its account id, shop name, an item, its keyword rules and whether AI answers the rest."""

    account_id: str
    nick: str
    item_title: str
    item_price: str
    rules: tuple[Rule, ...]
    default_reply: str = ""
    ai: bool = False


_COMMON_RULES = (
    Rule("包邮", "亲，这件宝贝是包邮的哦～"),
    Rule("发货", "付款后 24 小时内发货，发顺丰～"),
    Rule("在吗", "在的亲，有什么可以帮您？", priority=1),
)

DEMO_SHOPS: tuple[DemoShop, ...] = (
    DemoShop(
        "demo-digital",
        "数码小铺",
        "九成新 AirPods Pro",
        "699",
        (*_COMMON_RULES, Rule("价格", "这个价格已经很实在啦，诚心要可以小刀～"), Rule("保修", "还有半年官方保修。")),
        default_reply="您好，{buyer_name}！宝贝还在，有问题随时问我～",
    ),
    DemoShop(
        "demo-books",
        "二手书屋",
        "《三体》全三册",
        "45",
        (*_COMMON_RULES, Rule("价格", "三本一起 45 元，不单卖哦。"), Rule("几成新", "九成新，无笔记无划线。")),
        default_reply="欢迎光临二手书屋，看中哪本直接拍～",
    ),
    DemoShop(
        "demo-toys",
        "潮玩小站",
        "泡泡玛特 盲盒 整盒",
        "399",
        (*_COMMON_RULES, Rule("正品", "保证正品，支持验货。")),
        default_reply="亲，稍等，马上回复您～",
        ai=True,
    ),
)

BUYER_LINES: tuple[str, ...] = (
    "在吗？",
    "这个价格还能少吗",
    "包邮吗",
    "什么时候发货",
    "是正品吗",
    "还有保修吗",
    "几成新呀",
    "可以便宜点吗，诚心要",
    "你好，我想问一下",
    "能发个实拍图吗",
)
BUYER_NICKS: tuple[str, ...] = ("小王", "阿杰", "莉莉", "老张", "喵喵", "大白", "Kevin", "小鱼")


@dataclass(slots=True)
class _Chats:
    """The conversations scripted buyers have started, per shop, so some buyers come back to the same chat."""

    by_shop: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # unb -> [(chat_id, nick)]


def _free_port(host: str, preferred: int) -> int:
    """`preferred` when it can be bound now, else 0 (the OS picks one): a busy 8080 must not stop a demo."""
    if preferred == 0:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, preferred))
        except OSError:
            return 0
    return preferred


def demo_settings(data_dir: Path, sim: Simulator, *, port: int, admin_password: str) -> Settings:
    """The service's settings for the demo: its own SQLite in `data_dir`, the simulator as the platform."""
    return load_settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'xianyu.db'}",
        host="127.0.0.1",
        port=port,
        admin_username=DEMO_ADMIN,
        admin_password=admin_password,
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        # The demo's AI is the simulator's, on loopback: open exactly that address (docs/security.md).
        outbound={"allow": ["127.0.0.1/32"]},
    )


async def _set_up_shops(sim: Simulator, engine: AccountScheduler) -> dict[str, str]:
    """Create each demo seller in the simulator and its account in the service (through the scheduler);
    returns account id -> seller unb. A reused data dir keeps its accounts: their cookies are re-adopted."""
    sellers: dict[str, str] = {}
    known = set(engine.account_ids())
    for shop in DEMO_SHOPS:
        if shop.account_id in known:
            # Kept from an earlier demo in this data dir; `adopt_stored_sellers` taught the simulator its cookie.
            cookie = await engine.store.get_account_cookie(shop.account_id)
            seller = sim.create_seller(nick=shop.nick, cookie=cookie)
            sellers[shop.account_id] = seller["unb"]
            continue
        seller = sim.create_seller(nick=shop.nick)
        sim.create_item(seller["unb"], title=shop.item_title, price=shop.item_price)
        sellers[shop.account_id] = seller["unb"]
        await engine.add(shop.account_id, seller["cookie"], owner=DEMO_ADMIN, remark=shop.nick, actor="demo")
        await engine.set_rules(shop.account_id, shop.rules, actor="demo")
        ai = (
            AiSettingsUpdate(enabled=True, base_url=sim.openai_url, model="sim-model", api_key="demo-" + "k" * 16)
            if shop.ai
            else None
        )
        settings = AccountSettings(default_reply=shop.default_reply, default_reply_once_per_chat=True)
        await engine.set_settings(shop.account_id, settings, ai=ai, actor="demo")
    return sellers


async def adopt_stored_sellers(settings: Settings, sim: Simulator) -> None:
    """A reused data dir: let the fresh simulator accept the demo accounts' stored cookies before the engine
    connects them (a simulator forgets its sellers when it stops)."""
    store = await Store.open(settings)
    try:
        stored = {a.id for a in await store.list_accounts()}
        for shop in DEMO_SHOPS:
            if shop.account_id in stored:
                seller = sim.create_seller(nick=shop.nick, cookie=await store.get_account_cookie(shop.account_id))
                sim.create_item(seller["unb"], title=shop.item_title, price=shop.item_price)
    finally:
        await store.close()


async def _wait_running(engine: AccountScheduler, account_ids: Sequence[str], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(engine.state(a).lifecycle is Lifecycle.RUNNING for a in account_ids):
            return
        await asyncio.sleep(0.1)


async def scripted_buyers(
    sim: Simulator, sellers: dict[str, str], *, interval: float = 2.5, rng: random.Random | None = None
) -> None:
    """Buyers write every `interval` seconds or so: new chats and returning ones, and now and then an order."""
    rng = rng or random.Random()
    chats = _Chats()
    unbs = list(sellers.values())
    turn = 0
    while True:
        unb = unbs[turn % len(unbs)]
        turn += 1
        known = chats.by_shop.setdefault(unb, [])
        text = rng.choice(BUYER_LINES) if known else BUYER_LINES[0]  # a greeting first: every shop has a rule for it
        try:
            if known and rng.random() < 0.4:
                chat_id, nick = rng.choice(known)
                sim.push_message(unb, text, chat_id=chat_id, buyer_nick=nick)
            else:
                nick = rng.choice(BUYER_NICKS)
                pushed = sim.push_message(unb, text, buyer_nick=nick)
                known.append((pushed["chat_id"], nick))
                del known[:-20]
            if rng.random() < 0.15:
                sim.push_order(unb, status="paid")
        except Exception:  # the simulator is stopping, or a chat was refused: the next turn tries again
            pass
        await asyncio.sleep(interval * rng.uniform(0.6, 1.4))


def _clock(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000).strftime("%H:%M:%S")


def conversation_line(event: Event, shops: dict[str, str], rules: dict[str, str] | None = None) -> str | None:
    """A console line (rich markup, every outside text escaped) for a buyer message or a reply; None otherwise.

    `rules` maps rule ids to keywords, so a rule's reply shows the keyword that fired."""
    shop = escape(shops.get(event.account_id or "", event.account_id or ""))
    head = f"[dim]{_clock(event.at_ms)}[/dim] [cyan]{shop}[/cyan]"
    match event:
        case MessageIn(own=False):
            buyer = escape(event.sender or "买家")
            return f"{head} 买家 {buyer}: {escape(event.text)}"
        case ReplySent():
            kind, _, rule_id = event.source.partition(":")
            named = kind == "rule" and rules and rule_id in rules
            source = escape(f"规则「{rules[rule_id]}」" if named and rules else event.source)
            return f"{head} [green]-> 回复[/green] ({source}): {escape(event.text)}"
        case ReplyFailed():
            return f"{head} [red]-> 发送失败[/red]: {escape(event.text)}"
        case LifecycleChanged():
            return f"{head} [yellow]状态 {escape(event.lifecycle)}[/yellow]"
    return None


async def print_conversation(engine: AccountScheduler, console: Console, shops: dict[str, str]) -> None:
    """Echo the engine's conversation events to the console as they happen."""
    rules: dict[str, str] = {}
    with engine.bus.listening(types=(MessageIn, ReplySent, ReplyFailed, LifecycleChanged)) as subscription:
        async for event in subscription:
            source = event.source if isinstance(event, ReplySent) else ""
            if source.startswith("rule:") and source[5:] not in rules and event.account_id:
                with contextlib.suppress(Exception):  # a deleted account: the id is shown instead
                    rules.update({r.id: r.keyword for r in await engine.store.get_rules(event.account_id) if r.id})
            line = conversation_line(event, shops, rules)
            if line is not None:
                console.print(line, soft_wrap=True, highlight=False)


async def run_demo(
    *,
    data_dir: Path | None = None,
    port: int = DEFAULT_PORT,
    seconds: float | None = None,
    interval: float = 2.5,
    console: Console | None = None,
) -> None:
    """Run simulator, service and scripted buyers until Ctrl-C (or `seconds`), then stop everything in order."""
    console = console or Console()
    configure_logging(level="WARNING")  # the conversation is the demo's output, not the service's info logs
    temp: tempfile.TemporaryDirectory[str] | None = None
    if data_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="xianyu-demo-")
        root = Path(temp.name)
    else:
        root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    password = os.environ.get("XAR_ADMIN_PASSWORD") or secrets.token_urlsafe(9)
    sim = Simulator()
    background: list[asyncio.Task[None]] = []
    try:
        await sim.start(host="127.0.0.1", port=0)
        settings = demo_settings(root, sim, port=_free_port("127.0.0.1", port), admin_password=password)
        if data_dir is not None:
            await adopt_stored_sellers(settings, sim)

        async def ready(server: RunningServer) -> None:
            assert server.engine is not None
            engine = server.engine
            credentials = await server.store.get_user_credentials(DEMO_ADMIN)
            reused = not await verify_password(credentials.password_hash, password)
            shops = {s.account_id: s.nick for s in DEMO_SHOPS}
            sellers = await _set_up_shops(sim, engine)
            login = f"[bold]{DEMO_ADMIN}[/bold] / [bold]{escape(password)}[/bold]"
            if reused:
                login = f"[bold]{DEMO_ADMIN}[/bold] / [dim](the password of the demo that made this data dir)[/dim]"
            console.print(
                Panel.fit(
                    f"管理后台 Admin: [link={server.url}/]{server.url}/[/link]\n"
                    f"登录 Login: {login}\n"
                    f"数据目录 Data: {escape(str(root))}\n"
                    f"模拟平台 Simulator: {sim.base_url}/_sim/\n"
                    "按 Ctrl-C 停止 · Press Ctrl-C to stop",
                    title="xianyu-autoreply demo",
                ),
                soft_wrap=True,
            )
            background.append(asyncio.create_task(print_conversation(engine, console, shops), name="demo-console"))
            await _wait_running(engine, list(sellers), timeout=10.0)
            background.append(asyncio.create_task(scripted_buyers(sim, sellers, interval=interval), name="demo-buyers"))
            if seconds is not None:
                asyncio.get_running_loop().call_later(seconds, server.stop)

        await run_server(settings, on_ready=ready, console=console, log_level="warning")
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await sim.stop()
        if temp is not None:
            temp.cleanup()
        console.print("demo stopped")
