"""A `Node` in the test's process: one node on SQLite, and commands from an API node on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xianyu_autoreply.config import Settings, load_settings
from xianyu_autoreply.engine.cluster import Node, NodeOptions, owner_of_account, send_command, wait_command
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, Store

from ..engine.conftest import FAST_OPTIONS, eventually

BUCKETS = 16


def _settings(sim: Simulator, tmp_path: Path, url: str) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=url,
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        session={"heartbeat_interval": 0.5, "heartbeat_timeout": 1.5},
    )


def _live(sim: Simulator, seller: str) -> int:
    return sum(1 for c in sim.hub.live(seller) if c.registered)


async def _node(store: Store, settings: Settings, node_id: str) -> Node:
    options = NodeOptions(node_id=node_id, buckets=BUCKETS, lease_ttl=3.0, lease_margin=0.6, settle=0.05)
    node = Node(store=store, settings=settings, options=options, engine_options=FAST_OPTIONS)
    await node.start()
    return node


@pytest.fixture
async def sqlite_store(sim: Simulator, tmp_path: Path) -> AsyncIterator[tuple[Store, Settings]]:
    settings = _settings(sim, tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'data' / 'xianyu.db'}")
    store = await Store.open(settings)
    try:
        yield store, settings
    finally:
        await store.close()


async def test_a_single_node_on_sqlite_owns_every_bucket_and_answers_once(
    sim: Simulator, sqlite_store: tuple[Store, Settings]
) -> None:
    store, settings = sqlite_store
    sellers = [sim.create_seller() for _ in range(3)]
    for i, seller in enumerate(sellers):
        await store.create_account(f"a{i}", seller["cookie"])
        await store.put_settings(f"a{i}", AccountSettings(default_reply="在的"))
    node = await _node(store, settings, "solo")
    try:
        await eventually(lambda: len(node.held) == BUCKETS)
        await eventually(lambda: all(_live(sim, s["unb"]) == 1 for s in sellers))
        pushed = sim.push_message(sellers[0]["unb"], "在吗")
        await eventually(lambda: sim.sent(seller=sellers[0]["unb"], chat_id=pushed["chat_id"]))
        sim.push_message(sellers[0]["unb"], "在吗", chat_id=pushed["chat_id"], message_id=pushed["message_id"])
        await sim.drain()
        assert len(sim.sent(seller=sellers[0]["unb"], chat_id=pushed["chat_id"])) == 1
    finally:
        await node.stop()
    assert all(_live(sim, s["unb"]) == 0 for s in sellers)


async def test_commands_from_an_api_node_run_on_the_owner_with_the_scheduler_rules(
    sim: Simulator, store: Store, pg_url: str, tmp_path: Path
) -> None:
    settings = _settings(sim, tmp_path, pg_url)
    node = await _node(store, settings, "w1")
    try:
        await eventually(lambda: len(node.held) == BUCKETS)
        seller = sim.create_seller()
        added = await wait_command(store, await send_command(store, "shop", "add", {"cookie": seller["cookie"]}))
        assert added.error is None and added.handled_by == "w1"
        await eventually(lambda: _live(sim, seller["unb"]) == 1)
        assert await owner_of_account(store, "shop") == "w1"

        refused = await wait_command(store, await send_command(store, "shop", "update_cookie", {"cookie": "junk"}))
        assert refused.error is not None  # refused before any write: the session keeps running
        assert _live(sim, seller["unb"]) == 1
        assert await store.get_account_cookie("shop") == seller["cookie"].strip()

        off = await wait_command(store, await send_command(store, "shop", "set_enabled", {"enabled": False}))
        assert off.error is None
        await eventually(lambda: _live(sim, seller["unb"]) == 0)
        assert not (await store.get_account("shop")).enabled
    finally:
        await node.stop()
    assert await owner_of_account(store, "shop") is None  # released on stop


async def test_a_second_node_gets_half_the_buckets_and_takes_all_back_when_the_first_leaves(
    sim: Simulator, store: Store, pg_url: str, tmp_path: Path
) -> None:
    settings = _settings(sim, tmp_path, pg_url)
    sellers = [sim.create_seller() for _ in range(8)]
    for i, seller in enumerate(sellers):
        await store.create_account(f"a{i}", seller["cookie"])
    first = await _node(store, settings, "n1")
    second: Node | None = None
    try:
        await eventually(lambda: len(first.held) == BUCKETS)
        second = await _node(store, settings, "n2")
        await eventually(lambda: len(first.held) == len(second.held) == BUCKETS // 2, timeout=15)
        await eventually(lambda: all(_live(sim, s["unb"]) == 1 for s in sellers))
        await first.stop()
        await eventually(lambda: second is not None and len(second.held) == BUCKETS, timeout=2)  # NOTIFY, no TTL
        await eventually(lambda: all(_live(sim, s["unb"]) == 1 for s in sellers))
    finally:
        await first.stop()
        if second is not None:
            await second.stop()


async def test_writes_from_an_api_node_without_engine_reach_the_worker_that_owns_the_account(
    sim: Simulator, store: Store, pg_url: str, tmp_path: Path
) -> None:
    """`serve --no-engine`: the API commits to the database, then the owning worker re-reads the account."""
    from xianyu_autoreply.api.operations import AccountOperations
    from xianyu_autoreply.store import Rule

    settings = _settings(sim, tmp_path, pg_url)
    node = await _node(store, settings, "w1")
    ops = AccountOperations(store, engine=None)
    try:
        await eventually(lambda: len(node.held) == BUCKETS)
        seller = sim.create_seller()
        await ops.add("shop", seller["cookie"], owner=None, enabled=True, remark="", proxy=None, actor="api")
        await eventually(lambda: _live(sim, seller["unb"]) == 1)
        await ops.set_rules("shop", [Rule("价格", "九十九元")], actor="api")
        pushed = sim.push_message(seller["unb"], "价格多少")
        await eventually(lambda: sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]))
        assert sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])[0]["text"] == "九十九元"
        await ops.set_enabled("shop", False, actor="api")
        await eventually(lambda: _live(sim, seller["unb"]) == 0)
        assert await owner_of_account(store, "shop") == "w1"
    finally:
        await node.stop()
