import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from xianyu_autoreply.store import AccountNotFound, ChatState, Direction, InvalidValue, Outbound, Store


async def _claim(store: Store, account: str, message_id: str, *, text: str = "在吗", chat_id: str = "c1") -> bool:
    return await store.claim_inbound(
        account, message_id, chat_id=chat_id, created_ms=1_700_000_000_000, text=text, sender_id="b1"
    )


async def test_first_claim_wins_and_repeats_lose(store: Store, account: str) -> None:
    assert await _claim(store, account, "m1")
    assert not await _claim(store, account, "m1")
    assert len(await store.list_messages(account)) == 1


async def test_same_text_twice_as_two_messages_is_claimed_twice(store: Store, account: str) -> None:
    assert await _claim(store, account, "m1", text="多少钱")
    assert await _claim(store, account, "m2", text="多少钱")


async def test_concurrent_claims_of_one_message_have_one_winner(store: Store, account: str) -> None:
    results = await asyncio.gather(*(_claim(store, account, "m-dup") for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]


async def test_dedup_survives_a_new_store_on_the_same_database(store: Store, account: str) -> None:
    assert await _claim(store, account, "m1")
    restarted = Store(type(store.db)(store.db.url), store.box)
    try:
        assert not await _claim(restarted, account, "m1")
    finally:
        await restarted.close()


async def test_claim_for_a_missing_account(store: Store) -> None:
    with pytest.raises(AccountNotFound):
        await _claim(store, "ghost", "m1")


async def test_claim_needs_a_message_id(store: Store, account: str) -> None:
    with pytest.raises(InvalidValue):
        await _claim(store, account, "")


async def test_inbound_and_outbound_ids_do_not_collide(store: Store, account: str) -> None:
    assert await _claim(store, account, "same-id")
    await store.record_outbound(account, Outbound("same-id", chat_id="c1", text="reply", created_ms=2))
    assert {m.direction for m in await store.list_messages(account)} == {Direction.IN, Direction.OUT}


async def test_mark_inbound_records_the_outcome(store: Store, account: str) -> None:
    await _claim(store, account, "m1")
    assert await store.mark_inbound(account, "m1", status="replied", reply_source="rule:abc", reply_reason="keyword")
    assert not await store.mark_inbound(account, "unknown", status="replied")
    (message,) = await store.list_messages(account)
    assert (message.status, message.reply_source, message.reply_reason) == ("replied", "rule:abc", "keyword")


async def test_record_outbound_is_idempotent(store: Store, account: str) -> None:
    first = await store.record_outbound(
        account, Outbound("out-1", chat_id="c1", text="您好", created_ms=5, reply_source="default", reply_to="m1")
    )
    again = await store.record_outbound(account, Outbound("out-1", chat_id="c1", text="您好", created_ms=5))
    assert first == again
    assert first.direction is Direction.OUT and first.reply_to == "m1" and first.status == "sent"


async def test_list_messages_is_chronological_per_chat_with_paging(store: Store, account: str) -> None:
    for n in range(5):
        await _claim(store, account, f"a{n}", chat_id="chat-a", text=f"a{n}")
        await _claim(store, account, f"b{n}", chat_id="chat-b", text=f"b{n}")
    latest = await store.list_messages(account, chat_id="chat-a", limit=3)
    assert [m.text for m in latest] == ["a2", "a3", "a4"]
    older = await store.list_messages(account, chat_id="chat-a", limit=3, before_id=latest[0].id)
    assert [m.text for m in older] == ["a0", "a1"]
    assert len(await store.list_messages(account, limit=100)) == 10
    with pytest.raises(InvalidValue):
        await store.list_messages(account, limit=0)


async def test_list_chats_shows_the_latest_message_of_each(store: Store, account: str) -> None:
    await _claim(store, account, "1", chat_id="old", text="first")
    await _claim(store, account, "2", chat_id="new", text="second")
    await _claim(store, account, "3", chat_id="old", text="third")
    chats = await store.list_chats(account)
    summary = [(c.chat_id, c.last_message.text, c.message_count) for c in chats]
    assert summary == [("old", "third", 2), ("new", "second", 1)]


async def test_prune_messages_deletes_only_old_ones(store: Store, account: str) -> None:
    await _claim(store, account, "m1")
    assert await store.prune_messages(older_than=datetime.now(UTC) - timedelta(days=1)) == 0
    assert await store.prune_messages(older_than=datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert await store.list_messages(account) == []


async def test_chat_state_defaults_and_round_trip(store: Store, account: str) -> None:
    assert await store.get_chat_state(account, "c1") == ChatState(account_id=account, chat_id="c1")
    until = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    wanted = ChatState(account_id=account, chat_id="c1", paused_until=until, default_reply_sent=True, bargain_rounds=2)
    assert await store.put_chat_state(wanted) == wanted
    assert await store.get_chat_state(account, "c1") == wanted


async def test_pause_chat_sets_and_clears_the_pause(store: Store, account: str) -> None:
    until = datetime.now(UTC) + timedelta(minutes=10)
    paused = await store.pause_chat(account, "c1", until=until)
    assert paused.paused_until == until
    assert (await store.pause_chat(account, "c1", until=None)).paused_until is None


async def test_default_reply_flag_is_set_once(store: Store, account: str) -> None:
    results = await asyncio.gather(*(store.mark_default_reply_sent(account, "c1") for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]
    assert (await store.get_chat_state(account, "c1")).default_reply_sent


async def test_bargain_rounds_count_without_lost_updates(store: Store, account: str) -> None:
    counts = await asyncio.gather(*(store.count_bargain_round(account, "c1") for _ in range(8)))
    assert sorted(counts) == list(range(1, 9))
    assert (await store.get_chat_state(account, "c1")).bargain_rounds == 8


async def test_chat_state_of_a_missing_account(store: Store) -> None:
    with pytest.raises(AccountNotFound):
        await store.pause_chat("ghost", "c1", until=None)
    with pytest.raises(AccountNotFound):
        await store.count_bargain_round("ghost", "c1")
