"""The pure parts of the order desk: the order status machine, the delivery rule choice, webhook answers."""

from __future__ import annotations

import pytest

from xianyu_autoreply.engine.orders import DeliveryOptions, choose_rule, needs_title, next_status, webhook_answer
from xianyu_autoreply.protocol import OrderStatus

from .order_samples import rule

# -- status machine ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (None, "created", "created"),
        (None, "paid", "paid"),
        ("created", "paid", "paid"),
        ("paid", "shipped", "shipped"),
        ("created", "completed", "completed"),
        ("shipped", "completed", "completed"),
        ("paid", "closed", "closed"),
        ("created", "closed", "closed"),
        ("paid", "refunding", "refunding"),
        ("completed", "refunding", "refunding"),
        ("refunding", "refunded", "refunded"),
        ("closed", "refunded", "refunded"),
        ("paid", "refunded", "refunded"),
    ],
)
def test_allowed_moves(current: str | None, incoming: str, expected: str) -> None:
    assert next_status(current, incoming) == expected


@pytest.mark.parametrize(
    ("current", "incoming"),
    [
        ("paid", "paid"),  # a repeat
        ("shipped", "paid"),  # a late, stale event
        ("completed", "created"),
        ("refunded", "paid"),  # refunded is final
        ("closed", "paid"),  # closed is final, but for a refund
        ("created", "refunding"),  # nothing was paid
        ("completed", "closed"),
        (None, "refund_cancelled"),
        ("paid", "refund_cancelled"),
    ],
)
def test_refused_moves_change_nothing(current: str | None, incoming: str) -> None:
    assert next_status(current, incoming) is None


def test_a_cancelled_refund_returns_to_the_status_before_it() -> None:
    history = ["created", "paid", "shipped", "refunding"]
    assert next_status("refunding", OrderStatus.REFUND_CANCELLED, history=history) == "shipped"
    assert next_status("refunding", "refund_cancelled", history=["refunding"]) == "paid"


def test_an_order_in_refund_can_still_be_shipped_or_completed_but_not_paid_again() -> None:
    assert next_status("refunding", "completed") == "completed"
    assert next_status("refunding", "paid") is None


# -- rule choice --------------------------------------------------------------------------------------------------


def test_item_rule_beats_keyword_beats_general() -> None:
    rules = [rule(1), rule(2, title_keyword="会员"), rule(3, item_id="42")]
    assert choose_rule(rules, item_id="42", item_title="视频会员月卡").id == 3  # type: ignore[union-attr]
    assert choose_rule(rules, item_id="7", item_title="视频会员月卡").id == 2  # type: ignore[union-attr]
    assert choose_rule(rules, item_id="7", item_title="键盘").id == 1  # type: ignore[union-attr]
    assert choose_rule(rules, item_id="7", item_title=None).id == 1  # type: ignore[union-attr]


def test_rules_of_other_items_and_disabled_rules_never_apply() -> None:
    rules = [rule(1, item_id="42"), rule(2, enabled=False), rule(3, item_id="7", enabled=False)]
    assert choose_rule(rules, item_id="7", item_title="x") is None
    assert choose_rule([], item_id="7", item_title="x") is None


def test_within_a_tier_the_sellers_order_decides_and_keywords_ignore_case() -> None:
    rules = [rule(1, title_keyword="VIP"), rule(2, title_keyword="vip 年卡")]
    assert choose_rule(rules, item_id=None, item_title="vip 年卡").id == 1  # type: ignore[union-attr]


def test_title_is_needed_only_when_a_keyword_could_decide() -> None:
    assert not needs_title([rule(1)], item_id="7")
    assert not needs_title([rule(1, item_id="7"), rule(2, title_keyword="x")], item_id="7")
    assert needs_title([rule(1, item_id="8"), rule(2, title_keyword="x")], item_id="7")


# -- webhook answers and backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"content": "CODE-1"}', "CODE-1"),
        (b'{"text": " link "}', "link"),
        (b'{"data": "x", "ok": true}', "x"),
        (b'{"ok": true}', ""),
        (b"plain code\n", "plain code"),
        (b"{not json", "{not json"),
        (b"", ""),
    ],
)
def test_webhook_answer(body: bytes, expected: str) -> None:
    assert webhook_answer(body) == expected


def test_retry_delays_grow_and_are_capped() -> None:
    options = DeliveryOptions(retry_base=1.0, retry_cap=5.0)
    assert [options.retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_public_api_is_pinned() -> None:
    from xianyu_autoreply.engine import notify, orders

    assert orders.__all__ == [
        "DeliveryOptions",
        "GoodsWebhook",
        "HttpGoodsWebhook",
        "OrderDesk",
        "WebhookBlocked",
        "WebhookError",
        "choose_rule",
        "needs_title",
        "next_status",
        "webhook_answer",
    ]
    assert notify.__all__ == [
        "NOTIFY_EVENTS",
        "Notice",
        "Notifier",
        "NotifyEvent",
        "NotifyOptions",
        "apprise_send",
        "describe_events",
        "notice_for",
        "redact",
    ]
