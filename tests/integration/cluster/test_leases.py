"""Bucket leases on a real PostgreSQL: claim, renew, release, expiry, fencing, commands (store/cluster.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from xianyu_autoreply.store import Outbound, Store
from xianyu_autoreply.store.cluster import (
    ClusterStore,
    Fence,
    FencedOut,
    Lease,
    bucket_of,
    plan_share,
    rendezvous_score,
)
from xianyu_autoreply.store.models import CommandRow, MessageRow, utcnow

COOKIE = "unb=2200000001; cookie2=c2; _m_h5_tk=tk_1700000000000; _m_h5_tk_enc=enc; t=t1"
BUCKETS = 16


def _leases(owners: dict[int, str | None], *, total: int, expired: bool = False) -> list[Lease]:
    now = utcnow()
    until = now - timedelta(seconds=1) if expired else now + timedelta(seconds=60)
    return [Lease(b, owners.get(b), 1, until if owners.get(b) else now) for b in range(total)]


# --- the pure plan ----------------------------------------------------------------------------------------------


def test_bucket_of_is_stable_and_spread() -> None:
    assert bucket_of("acc-1", 1024) == bucket_of("acc-1", 1024)
    spread = {bucket_of(f"acc-{i}", 8) for i in range(200)}
    assert spread == set(range(8))


def test_a_lone_node_plans_to_take_every_bucket() -> None:
    plan = plan_share("a", live=["a"], leases=_leases({}, total=10), now=utcnow())
    assert sorted(plan.wanted) == list(range(10)) and plan.shed == []


def test_nodes_prefer_the_buckets_they_rank_first_for() -> None:
    nodes = ["a", "b", "c"]
    plan = plan_share("a", live=nodes, leases=_leases({}, total=30), now=utcnow())
    assert len(plan.wanted) == 10
    top = {b for b in range(30) if max(nodes, key=lambda n: rendezvous_score(n, b)) == "a"}
    assert set(plan.wanted[: min(10, len(top))]) <= top


def test_a_joining_node_makes_the_others_shed_at_most_a_fair_share() -> None:
    owners = {b: ("a" if b % 3 == 0 else "b" if b % 3 == 1 else "c") for b in range(120)}
    leases = _leases(owners, total=120)
    now = utcnow()
    shed = [plan_share(n, live=["a", "b", "c", "d"], leases=leases, now=now).shed for n in "abc"]
    assert sum(len(s) for s in shed) == 30  # exactly the newcomer's share, nothing more moves
    assert plan_share("d", live=["a", "b", "c", "d"], leases=leases, now=now).shed == []


def test_nobody_sheds_when_free_buckets_cover_the_newcomer() -> None:
    owners = {b: "a" for b in range(60)}
    plan = plan_share("a", live=["a", "b"], leases=_leases(owners, total=120), now=utcnow())
    assert plan.shed == []


# --- leases on PostgreSQL ---------------------------------------------------------------------------------------


async def test_first_node_takes_everything_and_a_second_gets_its_half_after_the_handover(
    cluster: ClusterStore,
) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await cluster.register("a", version="t")
    first = await cluster.claim("a", ttl=30, live_within=20)
    assert sorted(first.claimed) == list(range(BUCKETS)) and all(e == 1 for e in first.claimed.values())
    await cluster.register("b", version="t")
    assert (await cluster.claim("b", ttl=30, live_within=20)).claimed == {}
    handover = await cluster.claim("a", ttl=30, live_within=20)
    assert len(handover.shed) == BUCKETS // 2
    assert await cluster.release("a", handover.shed) == BUCKETS // 2
    second = await cluster.claim("b", ttl=30, live_within=20)
    assert sorted(second.claimed) == sorted(handover.shed)
    assert all(e == 2 for e in second.claimed.values())  # a new owner, a new epoch


async def test_nodes_claiming_at_once_never_double_book_a_bucket(cluster: ClusterStore) -> None:
    await cluster.ensure_buckets(BUCKETS * 8)
    nodes = [f"n{i}" for i in range(4)]
    for node in nodes:
        await cluster.register(node, version="t")
    results = await asyncio.gather(*(cluster.claim(n, ttl=30, live_within=20) for n in nodes))
    claimed = [set(r.claimed) for r in results]
    assert sum(len(c) for c in claimed) == len(set().union(*claimed))  # disjoint
    owners = {lease.bucket: lease.owner for lease in await cluster.leases()}
    for node, buckets in zip(nodes, claimed, strict=True):
        assert all(owners[b] == node for b in buckets)


async def test_renew_extends_live_leases_and_drops_expired_ones(cluster: ClusterStore) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await cluster.register("a", version="t")
    claimed = (await cluster.claim("a", ttl=0.5, live_within=20)).claimed
    assert await cluster.renew("a", claimed, ttl=0.5) == claimed
    await asyncio.sleep(0.7)
    assert await cluster.renew("a", claimed, ttl=30) == {}  # expired: lost, to be claimed again with a new epoch
    again = (await cluster.claim("a", ttl=30, live_within=20)).claimed
    assert all(again[b] == claimed[b] + 1 for b in claimed)


async def test_an_expired_lease_goes_to_another_node_with_a_new_epoch(cluster: ClusterStore) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await cluster.register("a", version="t")
    old = (await cluster.claim("a", ttl=0.3, live_within=0.2)).claimed
    await cluster.register("b", version="t")
    assert (await cluster.claim("b", ttl=30, live_within=0.2)).claimed == {}  # still a's
    await asyncio.sleep(0.5)
    await cluster.register("b", version="t")
    taken = (await cluster.claim("b", ttl=30, live_within=0.2)).claimed
    assert sorted(taken) == sorted(old) and all(taken[b] == old[b] + 1 for b in old)


async def test_leave_releases_every_bucket_and_unregisters(cluster: ClusterStore) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await cluster.register("a", version="t")
    await cluster.claim("a", ttl=30, live_within=20)
    assert await cluster.leave("a") == BUCKETS
    assert all(lease.owner is None for lease in await cluster.leases())
    assert await cluster.nodes() == []


async def test_nodes_silent_for_long_are_forgotten(cluster: ClusterStore) -> None:
    await cluster.register("old", version="t")
    await asyncio.sleep(0.3)
    await cluster.register("new", version="t")
    assert await cluster.forget_nodes(silent_for=0.2) == 1
    assert [n.node_id for n in await cluster.nodes()] == ["new"]


async def test_another_bucket_count_is_refused(cluster: ClusterStore) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await cluster.ensure_buckets(BUCKETS)
    with pytest.raises(ValueError, match="16 buckets"):
        await cluster.ensure_buckets(32)


# --- fencing ----------------------------------------------------------------------------------------------------


async def _owned_by(cluster: ClusterStore, node: str, *, ttl: float) -> dict[int, int]:
    await cluster.register(node, version="t")
    return (await cluster.claim(node, ttl=ttl, live_within=0.2)).claimed


async def test_a_write_with_the_old_epoch_is_refused_after_a_takeover(store: Store, cluster: ClusterStore) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await store.create_account("acc", COOKIE)
    bucket = bucket_of("acc", BUCKETS)
    old = Fence("a", bucket, (await _owned_by(cluster, "a", ttl=0.3))[bucket])
    assert await store.claim_inbound("acc", "m1", chat_id="c", created_ms=1, fence=old)
    await asyncio.sleep(0.5)
    new = Fence("b", bucket, (await _owned_by(cluster, "b", ttl=30))[bucket])
    assert new.epoch == old.epoch + 1
    with pytest.raises(FencedOut):
        await store.claim_inbound("acc", "m2", chat_id="c", created_ms=2, fence=old)
    with pytest.raises(FencedOut):
        await store.update_cookie("acc", COOKIE + "; x=old", fence=old)
    with pytest.raises(FencedOut):
        await store.claim_delivery("acc", "o1", fence=old)
    with pytest.raises(FencedOut):
        await store.record_outbound("acc", Outbound("u1", chat_id="c", text="hi", created_ms=3), fence=old)
    assert await store.claim_inbound("acc", "m2", chat_id="c", created_ms=2, fence=new)
    async with store.db.read() as s:
        ids = (await s.scalars(select(MessageRow.message_id).order_by(MessageRow.id))).all()
    assert ids == ["m1", "m2"]  # the refused writes left nothing behind


async def test_a_write_is_refused_once_the_lease_expired_even_before_anyone_took_it(
    store: Store, cluster: ClusterStore
) -> None:
    await cluster.ensure_buckets(BUCKETS)
    await store.create_account("acc", COOKIE)
    bucket = bucket_of("acc", BUCKETS)
    fence = Fence("a", bucket, (await _owned_by(cluster, "a", ttl=0.3))[bucket])
    await asyncio.sleep(0.5)
    with pytest.raises(FencedOut):
        await store.claim_inbound("acc", "m1", chat_id="c", created_ms=1, fence=fence)


async def test_a_fenced_write_on_sqlite_passes_while_the_single_node_holds_the_bucket(tmp_path: Path) -> None:
    from xianyu_autoreply.config import load_settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    store = await Store.open(load_settings(data_dir=tmp_path, database_url=url))
    try:
        cluster = ClusterStore(store.db, store.box)
        await cluster.ensure_buckets(BUCKETS)
        await store.create_account("acc", COOKIE)
        held = await _owned_by(cluster, "solo", ttl=30)
        assert sorted(held) == list(range(BUCKETS))
        bucket = bucket_of("acc", BUCKETS)
        assert await store.claim_inbound("acc", "m1", chat_id="c", created_ms=1, fence=Fence("solo", bucket, 1))
        with pytest.raises(FencedOut):
            await store.claim_inbound("acc", "m2", chat_id="c", created_ms=1, fence=Fence("solo", bucket, 0))
    finally:
        await store.close()


# --- commands ---------------------------------------------------------------------------------------------------


async def test_commands_are_sealed_taken_by_bucket_in_order_and_finished_once(
    store: Store, cluster: ClusterStore
) -> None:
    first = await cluster.enqueue("acc", "update_cookie", {"cookie": COOKIE}, bucket=3)
    second = await cluster.enqueue("acc", "set_enabled", {"enabled": False}, bucket=3)
    await cluster.enqueue("other", "reload", {}, bucket=4)
    async with store.db.read() as s:
        payloads = (await s.scalars(select(CommandRow.payload))).all()
    assert all("cookie2" not in str(p) for p in payloads)  # no secret in the table
    taken = await cluster.take("n1", [3])
    assert [c.id for c in taken] == [first, second]
    assert taken[0].payload == {"cookie": COOKIE} and taken[0].attempts == 1
    assert await cluster.finish(first, "n1")
    assert not await cluster.finish(first, "n1")
    assert await cluster.finish(second, "n1", error="boom")
    assert await cluster.take("n1", [3]) == []
    done = await cluster.get_command(second)
    assert done.done_at is not None and done.error == "boom" and done.handled_by == "n1"
