import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from xianyu_autoreply.store import (
    AccountNotFound,
    DatabaseError,
    DeliveryKind,
    DeliveryRuleSpec,
    DeliveryState,
    InvalidTransition,
    InvalidValue,
    NotFound,
    StockCount,
    StockState,
    Store,
)
from xianyu_autoreply.store.models import DeliveryRuleRow, StockLineRow

from .store_samples import failing_statement, read_files, snapshot

CARDS = [f"CARD-{n:04d}-SECRET" for n in range(10)]


async def _batch_rule(store: Store, account: str, lines: list[str], **options: object) -> int:
    spec = DeliveryRuleSpec("batch", item_id="i1", lines=lines, **options)  # type: ignore[arg-type]
    (rule,) = await store.replace_delivery_rules(account, [spec])
    return rule.id


# -- orders ----------------------------------------------------------------------------------------------------------


async def test_new_order_then_status_changes_build_its_history(store: Store, account: str) -> None:
    created = await store.record_order(
        account, "o1", status="created", buyer_id="b1", buyer_nick="小明", item_id="i1", chat_id="c1", quantity=2
    )
    assert created.previous_status is None and created.status_changed
    paid = await store.record_order(account, "o1", status="paid", detail={"amount": "9.90"})
    assert paid.previous_status == "created" and paid.status_changed
    repeat = await store.record_order(account, "o1", status="paid")
    assert not repeat.status_changed
    order = await store.get_order(account, "o1")
    assert [e.status for e in order.history] == ["created", "paid"]
    assert order.history[1].detail == {"amount": "9.90"}
    assert (order.buyer_nick, order.item_id, order.chat_id, order.quantity) == ("小明", "i1", "c1", 2)


async def test_list_orders_newest_first_with_status_filter(store: Store, account: str) -> None:
    for n, status in enumerate(["paid", "closed", "paid"]):
        await store.record_order(account, f"o{n}", status=status)
    assert [o.order_id for o in await store.list_orders(account)] == ["o2", "o1", "o0"]
    assert [o.order_id for o in await store.list_orders(account, status="paid")] == ["o2", "o0"]


async def test_order_errors(store: Store, account: str) -> None:
    with pytest.raises(NotFound):
        await store.get_order(account, "nope")
    with pytest.raises(AccountNotFound):
        await store.record_order("ghost", "o1", status="paid")
    with pytest.raises(InvalidValue):
        await store.record_order(account, "o1", status="paid", quantity=0)


async def test_concurrent_events_of_one_order_keep_one_row(store: Store, account: str) -> None:
    changes = await asyncio.gather(*(store.record_order(account, "o1", status="paid") for _ in range(6)))
    assert sum(change.previous_status is None for change in changes) == 1
    assert len((await store.get_order(account, "o1")).history) == 1


# -- deliveries ------------------------------------------------------------------------------------------------------


async def test_claim_delivery_is_exactly_once_per_unit(store: Store, account: str) -> None:
    results = await asyncio.gather(*(store.claim_delivery(account, "o1", 1) for _ in range(10)))
    assert sorted(results) == [False] * 9 + [True]
    assert await store.claim_delivery(account, "o1", 2)
    order = await store.record_order(account, "o1", status="paid")
    assert [d.unit for d in order.order.deliveries] == [1, 2]


async def test_delivery_attempts_and_due_list(store: Store, account: str) -> None:
    await store.claim_delivery(account, "o1")
    await store.claim_delivery(account, "o2")
    soon = datetime.now(UTC) + timedelta(minutes=5)
    failed = await store.update_delivery(account, "o1", state="failed", error="timeout", next_attempt_at=soon)
    assert (failed.state, failed.attempts, failed.error) == (DeliveryState.FAILED, 1, "timeout")
    assert [d.order_id for d in await store.list_due_deliveries()] == ["o2"]
    later = soon + timedelta(seconds=1)
    assert [d.order_id for d in await store.list_due_deliveries(now=later)] == ["o1", "o2"]
    assert await store.list_due_deliveries(now=later, account_ids=["other"]) == []
    gave_up = await store.update_delivery(account, "o1", state=DeliveryState.DELIVERY_FAILED, error="webhook 500")
    assert gave_up.attempts == 2 and gave_up.next_attempt_at is None
    assert [d.order_id for d in await store.list_due_deliveries(now=later)] == ["o2"]
    assert (await store.get_deliveries(account, "o1"))[0].state is DeliveryState.DELIVERY_FAILED


async def test_update_delivery_needs_a_claim(store: Store, account: str) -> None:
    with pytest.raises(NotFound):
        await store.update_delivery(account, "o1", state="sent")
    with pytest.raises(InvalidValue):
        await store.claim_delivery(account, "o1", 0)
    await store.claim_delivery(account, "o1")
    with pytest.raises(InvalidValue):
        await store.update_delivery(account, "o1", state="lost")


# -- delivery rules and stock ----------------------------------------------------------------------------------------


async def test_delivery_rules_show_stock_but_not_lines_unless_revealed(store: Store, account: str) -> None:
    rules = await store.replace_delivery_rules(
        account,
        [
            DeliveryRuleSpec("text", item_id="i2", content="网盘链接 https://pan.example/s/abc 提取码 1234"),
            DeliveryRuleSpec(
                "batch", title_keyword="会员", lines=CARDS[:3], low_stock_threshold=5, reusable_on_refund=True
            ),
            DeliveryRuleSpec("webhook", content="https://seller.example/hook?token=t0ps3cret", delay_seconds=30),
        ],
    )
    assert [r.kind for r in rules] == [DeliveryKind.TEXT, DeliveryKind.BATCH, DeliveryKind.WEBHOOK]
    assert all(r.content is None and r.lines is None for r in rules)
    assert rules[1].stock == StockCount(available=3) and rules[1].low_stock
    assert "t0ps3cret" not in repr(rules)
    revealed = await store.list_delivery_rules(account, reveal=True)
    assert revealed[0].content and "提取码 1234" in revealed[0].content
    assert revealed[1].lines == tuple(CARDS[:3])
    one = await store.get_delivery_rule(rules[2].id, reveal=True)
    assert one.content == "https://seller.example/hook?token=t0ps3cret" and one.delay_seconds == 30


async def test_replacing_delivery_rules_keeps_ids_stock_and_content(store: Store, account: str) -> None:
    rule_id = await _batch_rule(store, account, CARDS[:4])
    first = await store.reserve_line(rule_id, "o1")
    assert first is not None
    specs = [DeliveryRuleSpec("batch", id=rule_id, low_stock_threshold=1), DeliveryRuleSpec("text", content="x")]
    text_rule = (await store.replace_delivery_rules(account, specs))[1]
    kept = await store.get_delivery_rule(rule_id, reveal=True)
    assert kept.stock == StockCount(available=3, reserved=1) and kept.low_stock_threshold == 1
    # New lines replace only the available ones; the reserved line stays with its order.
    await store.replace_delivery_rules(
        account, [DeliveryRuleSpec("batch", id=rule_id, lines=["NEW-1"]), DeliveryRuleSpec("text", id=text_rule.id)]
    )
    assert (await store.get_delivery_rule(rule_id, reveal=True)).lines == ("NEW-1",)
    assert (await store.get_delivery_rule(text_rule.id, reveal=True)).content == "x"  # content None keeps it
    assert (await store.stock_counts(rule_id)) == StockCount(available=1, reserved=1)
    await store.replace_delivery_rules(account, [])
    assert await store.list_delivery_rules(account) == []
    with pytest.raises(NotFound):
        await store.get_delivery_rule(rule_id)


async def test_delivery_rules_refuse_foreign_ids_and_lines_on_non_batch(store: Store, account: str) -> None:
    with pytest.raises(NotFound):
        await store.replace_delivery_rules(account, [DeliveryRuleSpec("text", id=999)])
    with pytest.raises(InvalidValue):
        DeliveryRuleSpec("text", lines=["a"])
    with pytest.raises(InvalidValue):
        DeliveryRuleSpec("carrier-pigeon")


async def test_replace_delivery_rules_is_atomic(store: Store, account: str) -> None:
    await _batch_rule(store, account, CARDS[:2])
    before = await snapshot(store.db)
    with failing_statement(store.db, "INSERT INTO stock_lines") as failed, pytest.raises(DatabaseError):
        await store.replace_delivery_rules(account, [DeliveryRuleSpec("batch", lines=CARDS)])
    assert failed
    assert await snapshot(store.db) == before


async def test_concurrent_reservations_never_share_a_line(store: Store, account: str) -> None:
    rule_id = await _batch_rule(store, account, CARDS)
    results = await asyncio.gather(*(store.reserve_line(rule_id, f"order-{n}") for n in range(20)))
    lines = [line for line in results if line is not None]
    assert len(lines) == 10 and results.count(None) == 10
    assert len({line.id for line in lines}) == 10
    assert sorted(line.content for line in lines) == sorted(CARDS)
    assert await store.stock_counts(rule_id) == StockCount(reserved=10)


async def test_reserve_again_for_the_same_unit_returns_its_line(store: Store, account: str) -> None:
    rule_id = await _batch_rule(store, account, CARDS[:3])
    first = await store.reserve_line(rule_id, "o1")
    again = await store.reserve_line(rule_id, "o1")
    second_unit = await store.reserve_line(rule_id, "o1", unit=2)
    assert first is not None and again is not None and second_unit is not None
    assert again.id == first.id and second_unit.id != first.id
    racing = await asyncio.gather(*(store.reserve_line(rule_id, "o2") for _ in range(5)))
    assert len({line.id for line in racing if line is not None}) == 1


async def test_reserve_send_commit_and_release(store: Store, account: str) -> None:
    rule_id = await _batch_rule(store, account, CARDS[:2])
    line = await store.reserve_line(rule_id, "o1")
    assert line is not None and line.state is StockState.RESERVED and line.content == CARDS[0]
    assert "CARD" not in repr(line)
    await store.release_line(line.id)  # the send failed: the line goes back to stock
    await store.release_line(line.id)  # idempotent
    assert await store.stock_counts(rule_id) == StockCount(available=2)
    line = await store.reserve_line(rule_id, "o1")
    assert line is not None and line.content == CARDS[0]  # oldest first, again
    await store.commit_line(line.id)
    await store.commit_line(line.id)  # idempotent
    assert await store.stock_counts(rule_id) == StockCount(available=1, delivered=1)
    with pytest.raises(InvalidTransition):
        await store.release_line(line.id)
    with pytest.raises(NotFound):
        await store.commit_line(12345)


@pytest.mark.parametrize(("reusable", "after"), [(True, StockState.AVAILABLE), (False, StockState.RETURNED)])
async def test_refund_returns_the_line_as_its_rule_says(
    store: Store, account: str, reusable: bool, after: StockState
) -> None:
    rule_id = await _batch_rule(store, account, CARDS[:1], reusable_on_refund=reusable)
    line = await store.reserve_line(rule_id, "o1")
    assert line is not None
    with pytest.raises(InvalidTransition):
        await store.return_line(line.id)  # not delivered yet
    await store.commit_line(line.id)
    assert await store.return_line(line.id) is after
    reused = await store.reserve_line(rule_id, "o2")
    assert (reused is not None) is reusable
    async with store.db.read() as s:
        row = await s.get(StockLineRow, line.id)
    assert row is not None and row.returned_at is not None
    if not reusable:
        assert row.order_id == "o1"  # the audit trail keeps which order had it


async def test_add_stock_lines_only_to_batch_rules(store: Store, account: str) -> None:
    rule_id = await _batch_rule(store, account, [])
    assert await store.add_stock_lines(rule_id, ["X-1", " ", "X-2"]) == StockCount(available=2)
    (text_rule,) = [
        r
        for r in await store.replace_delivery_rules(
            account, [DeliveryRuleSpec("batch", id=rule_id), DeliveryRuleSpec("text", content="t")]
        )
        if r.kind is DeliveryKind.TEXT
    ]
    with pytest.raises(InvalidValue):
        await store.add_stock_lines(text_rule.id, ["nope"])
    with pytest.raises(NotFound):
        await store.add_stock_lines(999, ["nope"])


async def test_stock_lines_and_contents_are_encrypted_at_rest(store: Store, account: str) -> None:
    await store.replace_delivery_rules(
        account,
        [DeliveryRuleSpec("batch", lines=CARDS[:2]), DeliveryRuleSpec("text", content="secret-goods-link")],
    )
    async with store.db.read() as s:
        lines = (await s.scalars(select(StockLineRow.line_encrypted))).all()
        contents = (await s.scalars(select(DeliveryRuleRow.content_encrypted))).all()
    stored = " ".join([*lines, *(c for c in contents if c)])
    assert "SECRET" not in stored and "secret-goods-link" not in stored


async def test_sqlite_file_bytes_hold_no_stock_line(tmp_path: Path, secret_key: str) -> None:
    from xianyu_autoreply.replies import Rule
    from xianyu_autoreply.store import Database, SecretBox, upgrade_database

    url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    await upgrade_database(url)
    store = Store(Database(url), SecretBox([secret_key]))
    try:
        await store.create_account("a", "unb=1; x=2")
        await store.replace_rules("a", [Rule("visible-keyword-marker", "r")])
        await store.replace_delivery_rules("a", [DeliveryRuleSpec("batch", lines=CARDS)])
    finally:
        await store.close()
    raw = read_files(tmp_path, "s.db*")  # the WAL holds recent pages
    assert b"visible-keyword-marker" in raw and b"SECRET" not in raw
