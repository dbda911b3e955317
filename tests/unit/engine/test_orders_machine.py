"""engine/orders/machine.py with plain values: whole order lifecycles, rule precedence, a unit's next step, the
verdict on an interrupted attempt, and that the module stays pure (no I/O, no event loop)."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from xianyu_autoreply.engine.orders import machine
from xianyu_autoreply.engine.orders.machine import (
    DeliveryOptions,
    Permanent,
    Stale,
    UnitStep,
    all_sent,
    choose_rule,
    due_at,
    next_status,
    stale_verdict,
    takes_goods_back,
    text_goods,
    unit_step,
)
from xianyu_autoreply.store import Delivery, DeliveryState

from .order_samples import NOW, ORDER, rule


def delivery(
    state: DeliveryState, *, attempts: int = 0, age: float = 0.0, retry_at: datetime | None = None
) -> Delivery:
    return Delivery(
        account_id="a",
        order_id="o",
        unit=1,
        state=state,
        rule_id=1,
        stock_line_id=None,
        attempts=attempts,
        error=None,
        next_attempt_at=retry_at,
        created_at=NOW - timedelta(seconds=age),
        updated_at=NOW - timedelta(seconds=age),
    )


def walk(events: Sequence[str]) -> list[str]:
    """The statuses an order goes through for a sequence of events (ignored events leave no trace)."""
    history: list[str] = []
    for event in events:
        status = next_status(history[-1] if history else None, event, history=history)
        if status is not None:
            history.append(status)
    return history


# -- the status machine -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (["created", "paid", "shipped", "completed"], ["created", "paid", "shipped", "completed"]),
        (["paid", "paid", "created", "shipped", "paid"], ["paid", "shipped"]),  # repeats and stale events ignored
        (["paid", "refunding", "refunded", "paid", "closed"], ["paid", "refunding", "refunded"]),  # refunded: final
        (["paid", "closed", "paid", "refunded"], ["paid", "closed", "refunded"]),  # closed may still be refunded
        (["paid", "shipped", "refunding", "refund_cancelled"], ["paid", "shipped", "refunding", "shipped"]),
        (
            ["paid", "refunding", "refund_cancelled", "refunding", "refund_cancelled"],
            ["paid", "refunding", "paid", "refunding", "paid"],  # back to before the refund, every time
        ),
        (["shipped", "refunding", "paid", "completed"], ["shipped", "refunding", "completed"]),  # no paying again
        (["refund_cancelled", "created", "closed"], ["created", "closed"]),
    ],
)
def test_an_order_walks_through_its_events(events: list[str], expected: list[str]) -> None:
    assert walk(events) == expected


@pytest.mark.parametrize(
    ("status", "previous", "expected"),
    [
        ("refunded", "paid", True),
        ("refunded", "refunding", True),
        ("closed", "shipped", True),
        ("refunded", "closed", False),  # closed before: its lines went back then
        ("closed", "created", False),  # never paid: nothing was delivered
        ("shipped", "paid", False),
    ],
)
def test_goods_come_back_only_when_a_paid_order_ends_without_a_sale(
    status: str, previous: str | None, expected: bool
) -> None:
    assert takes_goods_back(status, previous) is expected


# -- the rule choice ----------------------------------------------------------------------------------------------


def test_a_disabled_item_rule_falls_through_to_the_keyword_then_the_general_rule() -> None:
    rules = [rule(1), rule(2, title_keyword="月卡"), rule(3, item_id="i", enabled=False)]
    assert choose_rule(rules, item_id="i", item_title="视频月卡") == rules[1]
    assert choose_rule(rules, item_id="i", item_title="键盘") == rules[0]
    assert choose_rule(rules[2:], item_id="i", item_title="视频月卡") is None


def test_a_general_rule_earlier_in_the_list_never_beats_a_specific_one() -> None:
    rules = [rule(1), rule(2, title_keyword="卡"), rule(3, item_id="i")]
    assert choose_rule(rules, item_id="i", item_title="卡") == rules[2]
    assert choose_rule(rules, item_id=None, item_title="卡") == rules[1]


# -- goods ----------------------------------------------------------------------------------------------------------


def test_a_text_rule_renders_its_template_for_the_order() -> None:
    text = text_goods(rule(1, content="{buyer_name} 的 {order_id}：{account_name}"), ORDER, account_name="店")
    assert text == "小王 的 o-1：店"


@pytest.mark.parametrize("content", [None, "   ", "{nope"])
def test_an_empty_or_broken_text_rule_is_permanent(content: str | None) -> None:
    with pytest.raises(Permanent):
        text_goods(rule(1, content=content), ORDER, account_name="店")


# -- one unit -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "attempts", "expected"),
    [
        (DeliveryState.PENDING, 0, UnitStep.DUE),  # claimed, never attempted
        (DeliveryState.FAILED, 2, UnitStep.DUE),
        (DeliveryState.PENDING, 1, UnitStep.IN_FLIGHT),  # preparing its goods
        (DeliveryState.SENDING, 1, UnitStep.IN_FLIGHT),
        (DeliveryState.SENT, 1, UnitStep.DONE),
        (DeliveryState.DELIVERY_FAILED, 3, UnitStep.DONE),
    ],
)
def test_a_units_next_step_follows_its_state(state: DeliveryState, attempts: int, expected: UnitStep) -> None:
    assert unit_step(delivery(state, attempts=attempts)) is expected


def test_no_claim_is_nothing_to_do() -> None:
    assert unit_step(None) is UnitStep.DONE


@pytest.mark.parametrize(
    ("state", "age", "expected"),
    [
        (DeliveryState.PENDING, 10.0, Stale.RUNNING),
        (DeliveryState.SENDING, 10.0, Stale.RUNNING),
        (DeliveryState.PENDING, 60.0, Stale.RETRY),  # sent nothing: safe to retry
        (DeliveryState.SENDING, 60.0, Stale.GIVE_UP),  # may have reached the buyer: never re-sent
    ],
)
def test_an_interrupted_attempt_is_retried_only_when_it_provably_sent_nothing(
    state: DeliveryState, age: float, expected: Stale
) -> None:
    assert stale_verdict(delivery(state, attempts=1, age=age), now=NOW, stale_after=30.0) is expected


def test_the_rules_delay_counts_from_the_claim_and_a_retry_waits_for_its_time() -> None:
    claimed = delivery(DeliveryState.PENDING, age=5.0)
    assert due_at(claimed, delay_seconds=60.0) == NOW + timedelta(seconds=55)
    retry_at = NOW + timedelta(seconds=3)
    assert due_at(delivery(DeliveryState.FAILED, attempts=1, retry_at=retry_at), delay_seconds=60.0) == retry_at


def test_attempts_give_up_when_permanent_or_exhausted() -> None:
    options = DeliveryOptions(max_attempts=3)
    assert [options.gives_up(n) for n in (1, 2, 3)] == [False, False, True]
    assert options.gives_up(1, permanent=True)


def test_an_order_is_done_when_every_unit_was_sent() -> None:
    sent = delivery(DeliveryState.SENT, attempts=1)
    assert all_sent([sent, replace(sent, unit=2)], quantity=2)
    assert not all_sent([sent], quantity=2)
    assert not all_sent([sent, replace(sent, unit=2, state=DeliveryState.DELIVERY_FAILED)], quantity=2)


# -- purity ---------------------------------------------------------------------------------------------------------


def test_the_machine_imports_no_io() -> None:
    tree = ast.parse(Path(machine.__file__).read_text(encoding="utf-8"))
    imported = {
        ("." * node.level) + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported <= {
        "__future__",
        "enum",
        "collections.abc",
        "dataclasses",
        "datetime",
        "...protocol",
        "...replies.templates",
        "...store.records",
    }
