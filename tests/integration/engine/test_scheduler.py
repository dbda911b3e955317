"""AccountScheduler against the simulator with a real SQLite store: one truth, write-through, supervision."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from xianyu_autoreply.engine.events import AuthExpired
from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.platform.session import AccountSession
from xianyu_autoreply.protocol import InvalidCookie
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountNotFound, AccountSettings, Rule, Store

from .conftest import EngineFactory, eventually


def open_connections(sim: Simulator, seller: str) -> list[dict[str, Any]]:
    return [c for c in sim.connections(seller=seller) if not c["closed_ms"]]


async def running(engine: AccountScheduler, account_id: str, timeout: float = 10) -> None:
    await eventually(lambda: engine.state(account_id).lifecycle is Lifecycle.RUNNING, timeout=timeout)


async def test_an_added_account_starts_and_answers_by_rule(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    seller = sim.create_seller(nick="shop")
    await engine.add("shop1", seller["cookie"])
    await engine.set_rules("shop1", [Rule("价格", "不议价哦", id="price")])
    await running(engine, "shop1")
    pushed = sim.push_message(seller=seller["unb"], text="价格能便宜吗")
    sent = await eventually(lambda: sim.sent(seller=seller["unb"]))
    assert sent[0]["text"] == "不议价哦"
    log = await eventually(lambda: _log_complete(store, "shop1", pushed["chat_id"]))
    inbound = next(m for m in log if m.direction == "in")
    outbound = next(m for m in log if m.direction == "out")
    assert inbound.status == "replied" and inbound.reply_reason == "rule_matched"
    assert outbound.reply_source == "rule:price" and outbound.text == "不议价哦"
    state = engine.state("shop1")
    assert state.messages_in >= 1 and state.replies_out == 1


async def _log_complete(store: Store, account_id: str, chat_id: str) -> list[Any] | None:
    log = await store.list_messages(account_id, chat_id=chat_id)
    directions = {m.direction for m in log}
    statuses = {m.status for m in log if m.direction == "in"}
    return log if directions == {"in", "out"} and "replied" in statuses else None


async def test_an_invalid_cookie_is_refused_before_anything_changes(engine: AccountScheduler, store: Store) -> None:
    with pytest.raises(InvalidCookie):
        await engine.add("bad", "this is not a cookie")
    with pytest.raises(InvalidCookie):
        await engine.add("bad", "_m_h5_tk=abc; cookie2=x")  # no unb
    assert await store.list_accounts() == []
    assert engine.account_ids() == []


async def test_update_cookie_restarts_only_that_account(engine: AccountScheduler, sim: Simulator, store: Store) -> None:
    a, b = sim.create_seller(), sim.create_seller()
    await engine.add("a", a["cookie"])
    await engine.add("b", b["cookie"])
    await running(engine, "a")
    await running(engine, "b")
    b_session = engine.session("b")
    b_connection = open_connections(sim, b["unb"])
    fresh = a["cookie"] + "; extra=1"
    await engine.update_cookie("a", fresh)
    await running(engine, "a")
    assert engine.session("b") is b_session
    assert open_connections(sim, b["unb"]) == b_connection
    await eventually(lambda: len(open_connections(sim, a["unb"])) == 1)
    assert "extra=1" in await store.get_account_cookie("a")
    sim.push_message(seller=a["unb"], text="hi")


async def test_a_failed_write_leaves_memory_database_and_session_as_before(
    engine: AccountScheduler, sim: Simulator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await running(engine, "a")
    session = engine.session("a")
    before = await store.get_account_cookie("a")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full")

    for method in ("update_cookie", "set_enabled", "replace_rules", "put_settings", "delete_account"):
        monkeypatch.setattr(store, method, broken)
    with pytest.raises(RuntimeError):
        await engine.update_cookie("a", seller["cookie"] + "; x=1")
    with pytest.raises(RuntimeError):
        await engine.set_enabled("a", False)
    with pytest.raises(RuntimeError):
        await engine.set_rules("a", [Rule("k", "v")])
    with pytest.raises(RuntimeError):
        await engine.set_settings("a", AccountSettings(default_reply="x"))
    with pytest.raises(RuntimeError):
        await engine.remove("a")
    monkeypatch.undo()
    assert engine.session("a") is session and session is not None and session.connected
    assert engine.state("a").lifecycle is Lifecycle.RUNNING
    assert await store.get_account_cookie("a") == before
    assert (await store.get_account("a")).enabled
    assert await store.get_rules("a") == []


async def test_disable_stops_the_session_and_enable_starts_it(engine: AccountScheduler, sim: Simulator) -> None:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await running(engine, "a")
    await engine.set_enabled("a", False)
    assert engine.state("a").lifecycle is Lifecycle.STOPPED
    assert engine.session("a") is None
    await eventually(lambda: not open_connections(sim, seller["unb"]))
    await engine.set_enabled("a", True)
    await running(engine, "a")
    assert len(open_connections(sim, seller["unb"])) == 1


async def test_rule_and_setting_changes_apply_without_a_restart(engine: AccountScheduler, sim: Simulator) -> None:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await running(engine, "a")
    session = engine.session("a")
    await engine.set_settings("a", AccountSettings(default_reply="默认回复"))
    sim.push_message(seller=seller["unb"], text="first")
    await eventually(lambda: [s for s in sim.sent(seller=seller["unb"]) if s["text"] == "默认回复"])
    await engine.set_rules("a", [Rule("second", "规则回复")])
    sim.push_message(seller=seller["unb"], text="second")
    await eventually(lambda: [s for s in sim.sent(seller=seller["unb"]) if s["text"] == "规则回复"])
    assert engine.session("a") is session


async def test_a_removed_account_is_stopped_and_gone(engine: AccountScheduler, sim: Simulator, store: Store) -> None:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await engine.set_rules("a", [Rule("k", "v")])
    await running(engine, "a")
    await engine.remove("a")
    with pytest.raises(AccountNotFound):
        engine.state("a")
    with pytest.raises(AccountNotFound):
        await store.get_account("a")
    await eventually(lambda: not open_connections(sim, seller["unb"]))


async def test_a_crashing_session_is_restarted_and_answers_again(
    engine: AccountScheduler, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller = sim.create_seller()
    original = AccountSession._open
    crashes = 0

    async def crash_once(self: AccountSession) -> None:
        nonlocal crashes
        if crashes == 0:
            crashes += 1
            raise RuntimeError("bug in a session")
        await original(self)

    monkeypatch.setattr(AccountSession, "_open", crash_once)
    await engine.add("a", seller["cookie"])
    await engine.set_settings("a", AccountSettings(default_reply="在的"))
    await running(engine, "a")
    assert crashes == 1 and engine.state("a").crashes == 1
    sim.push_message(seller=seller["unb"], text="在吗")
    await eventually(lambda: sim.sent(seller=seller["unb"]))


async def test_a_crash_loop_parks_the_account_in_error_and_spares_the_others(
    engine: AccountScheduler, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad, good = sim.create_seller(), sim.create_seller()
    original = AccountSession._open

    async def crash_bad(self: AccountSession) -> None:
        if self.seller_id == bad["unb"]:
            raise RuntimeError("always broken")
        await original(self)

    monkeypatch.setattr(AccountSession, "_open", crash_bad)
    await engine.add("bad", bad["cookie"])
    await engine.add("good", good["cookie"])
    await eventually(lambda: engine.state("bad").lifecycle is Lifecycle.ERROR)
    assert "always broken" in (engine.state("bad").last_error or "")
    await running(engine, "good")


async def test_a_lost_login_ends_in_auth_expired(engine: AccountScheduler, sim: Simulator) -> None:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await running(engine, "a")
    with engine.bus.listening(types={AuthExpired}) as events:
        sim.set_fault("session_expired", seller=seller["unb"])
        sim.set_fault("drop", seller=seller["unb"])
        await eventually(lambda: engine.state("a").lifecycle is Lifecycle.AUTH_EXPIRED, timeout=20)
        assert (await asyncio.wait_for(events.get(), 1)).account_id == "a"


async def test_a_restart_answers_nothing_twice_and_serves_every_enabled_account(
    make_engine: EngineFactory, sim: Simulator
) -> None:
    a, b = sim.create_seller(), sim.create_seller()
    engine = await make_engine()
    await engine.add("a", a["cookie"])
    await engine.add("b", b["cookie"], enabled=False)
    await engine.set_settings("a", AccountSettings(default_reply="在的"))
    await running(engine, "a")
    first = sim.push_message(seller=a["unb"], text="在吗", message_id="once-1")
    await eventually(lambda: sim.sent(seller=a["unb"]))
    await engine.stop()

    again = await make_engine()
    await running(again, "a")
    assert again.state("b").lifecycle is Lifecycle.STOPPED
    sim.push_message(seller=a["unb"], text="在吗", message_id="once-1", chat_id=first["chat_id"], buyer=first["buyer"])
    await asyncio.sleep(0.8)
    assert len(sim.sent(seller=a["unb"])) == 1


async def test_operations_are_safe_from_another_thread(engine: AccountScheduler, sim: Simulator) -> None:
    seller = sim.create_seller()
    await engine.add("a", seller["cookie"])
    await running(engine, "a")
    with pytest.raises(RuntimeError, match="deadlock"):
        engine.call_threadsafe(engine.set_enabled, "a", False)
    account = await asyncio.to_thread(engine.call_threadsafe, engine.set_enabled, "a", False)
    assert account.enabled is False
    assert engine.state("a").lifecycle is Lifecycle.STOPPED
