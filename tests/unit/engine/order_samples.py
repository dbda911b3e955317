"""Sample orders and delivery rules shared by the orders unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from xianyu_autoreply.store import DeliveryKind, DeliveryRule, Order, StockCount

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

ORDER = Order(
    account_id="a",
    order_id="o-1",
    status="paid",
    buyer_id="b",
    buyer_nick="小王",
    item_id="i",
    item_title="月卡",
    chat_id="c",
    quantity=1,
    created_at=NOW,
    updated_at=NOW,
)


def rule(
    rule_id: int,
    *,
    item_id: str | None = None,
    title_keyword: str | None = None,
    enabled: bool = True,
    kind: DeliveryKind = DeliveryKind.TEXT,
    content: str | None = None,
) -> DeliveryRule:
    return DeliveryRule(
        id=rule_id,
        account_id="a",
        position=rule_id,
        kind=kind,
        item_id=item_id,
        title_keyword=title_keyword,
        delay_seconds=0.0,
        reusable_on_refund=False,
        low_stock_threshold=0,
        enabled=enabled,
        has_content=True,
        stock=StockCount(),
        content=content,
    )
