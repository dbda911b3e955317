"""The conversation log's group commit (store/writer.py): batches keep every caller's own answer and error."""

import asyncio
import dataclasses

import pytest

from xianyu_autoreply.store import AccountNotFound, Outbound, Store
from xianyu_autoreply.store.cluster import ClusterStore, Fence, FencedOut, bucket_of

from .store_samples import COOKIE


async def _claim(store: Store, account: str, message_id: str, *, fence: Fence | None = None) -> bool:
    return await store.claim_inbound(account, message_id, chat_id="c1", created_ms=1, text="在吗", fence=fence)


async def test_concurrent_claims_share_transactions_and_each_gets_its_answer(store: Store, account: str) -> None:
    ids = [f"m{n}" for n in range(300)]
    results = await asyncio.gather(*(_claim(store, account, i) for i in ids + ids[:50]))
    assert sum(results) == 300
    assert len(await store.list_messages(account, limit=1000)) == 300


async def test_a_missing_account_fails_only_its_own_claim(store: Store, account: str) -> None:
    results = await asyncio.gather(
        _claim(store, account, "a"), _claim(store, "ghost", "b"), _claim(store, account, "c"), return_exceptions=True
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], AccountNotFound)


async def test_queued_decisions_and_replies_are_written_by_flush(store: Store, account: str) -> None:
    assert await _claim(store, account, "m1")
    store.log_writer.mark_inbound(account, "m1", status="replied", reply_source="default", reply_reason="default")
    store.log_writer.record_outbound(account, Outbound("u1", chat_id="c1", text="您好", created_ms=2, reply_to="m1"))
    store.log_writer.record_outbound(account, Outbound("u1", chat_id="c1", text="您好", created_ms=2, reply_to="m1"))
    store.log_writer.record_outbound("ghost", Outbound("u2", chat_id="c1", text="x", created_ms=2))  # refused, logged
    await store.log_writer.flush()
    inbound, outbound = await store.list_messages(account)
    assert (inbound.status, inbound.reply_source) == ("replied", "default")
    assert (outbound.message_id, outbound.reply_to) == ("u1", "m1")


async def test_close_writes_what_is_still_queued(store: Store, account: str) -> None:
    assert await _claim(store, account, "m1")
    store.log_writer.mark_inbound(account, "m1", status="ignored")
    await store.log_writer.aclose()
    (inbound,) = await store.list_messages(account)
    assert inbound.status == "ignored"


async def test_a_batch_refuses_only_the_claims_whose_fence_moved(store: Store) -> None:
    cluster = ClusterStore(store.db, store.box)
    await cluster.ensure_buckets(4)
    await cluster.register("a", version="t")
    held = (await cluster.claim("a", ttl=30, live_within=0.2)).claimed
    await store.create_account("acc", COOKIE)
    bucket = bucket_of("acc", 4)
    good, stale = Fence("a", bucket, held[bucket]), Fence("a", bucket, held[bucket] - 1)
    results = await asyncio.gather(
        _claim(store, "acc", "m1", fence=good), _claim(store, "acc", "m2", fence=stale), return_exceptions=True
    )
    assert results[0] is True
    assert isinstance(results[1], FencedOut)
    with pytest.raises(FencedOut):
        await _claim(store, "acc", "m3", fence=stale)
    assert [m.message_id for m in await store.list_messages("acc")] == ["m1"]


async def test_queued_decisions_are_written_without_a_flush_within_the_lazy_window(store: Store, account: str) -> None:
    from xianyu_autoreply.store import writer

    assert await _claim(store, account, "m1")
    store.log_writer.mark_inbound(account, "m1", status="replied")
    await asyncio.sleep(writer.LAZY_S * 4)
    (inbound,) = await store.list_messages(account)
    assert inbound.status == "replied"


async def test_a_backlog_longer_than_one_batch_is_written_whole(
    store: Store, account: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xianyu_autoreply.store import writer

    monkeypatch.setattr(writer, "MAX_BATCH", 40)
    results = await asyncio.wait_for(asyncio.gather(*(_claim(store, account, f"m{n}") for n in range(130))), 30)
    assert all(results)
    for n in range(130):
        store.log_writer.mark_inbound(account, f"m{n}", status="ignored")
    await store.log_writer.flush()
    assert {m.status for m in await store.list_messages(account, limit=1000)} == {"ignored"}


async def test_rows_from_the_writer_read_back_like_rows_written_one_by_one(store: Store, account: str) -> None:
    # On a SQLite file the writer's batches bypass the ORM (store/log_sqlite.py); what a user reads must not differ.
    await store.record_outbound(
        account, Outbound("one", chat_id="c9", text="您好 {x}", created_ms=5, reply_source="rule:1")
    )
    store.log_writer.record_outbound(
        account, Outbound("two", chat_id="c9", text="您好 {x}", created_ms=5, reply_source="rule:1")
    )
    assert await _claim(store, account, "m9")
    await store.log_writer.flush()
    by_id = {m.message_id: m for m in await store.list_messages(account, chat_id="c9")}
    one, two = by_id["one"], by_id["two"]
    same = {"id": 0, "message_id": "", "recorded_at": one.recorded_at}
    assert dataclasses.replace(one, **same) == dataclasses.replace(two, **same)
    assert type(two.recorded_at) is type(one.recorded_at)
    assert abs((two.recorded_at - one.recorded_at).total_seconds()) < 60
    (claimed,) = [m for m in await store.list_messages(account) if m.message_id == "m9"]
    assert (claimed.direction, claimed.text, claimed.status) == ("in", "在吗", "received")
