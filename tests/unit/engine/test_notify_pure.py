"""Notification texts from engine events: which events notify, and that no secret gets into one."""

from __future__ import annotations

from xianyu_autoreply.engine.events import DeliveryFailed, LifecycleChanged, MessageIn, OrderPaid, StockLow
from xianyu_autoreply.engine.notify import NOTIFY_EVENTS, NotifyEvent, describe_events, notice_for, redact


def test_lifecycle_events_that_need_the_owner() -> None:
    expired = notice_for(LifecycleChanged(account_id="a1", lifecycle="auth_expired", reason="login gone"))
    assert expired is not None and expired.event is NotifyEvent.AUTH_EXPIRED and "a1" in expired.title
    error = notice_for(LifecycleChanged(account_id="a1", lifecycle="error", reason="boom"))
    assert error is not None and error.event is NotifyEvent.ACCOUNT_ERROR and "boom" in error.body


def test_ordinary_lifecycle_changes_are_not_notified() -> None:
    for lifecycle in ("starting", "running", "backoff", "stopped"):
        assert notice_for(LifecycleChanged(account_id="a1", lifecycle=lifecycle)) is None
    assert (
        notice_for(MessageIn(account_id="a1", chat_id="c", message_id="m", sender=None, text="hi", own=False)) is None
    )


def test_order_events() -> None:
    failed = notice_for(DeliveryFailed(account_id="a1", order_id="o1", unit=2, error="out of stock"))
    assert failed is not None and failed.event is NotifyEvent.DELIVERY_FAILED
    assert "o1" in failed.title and "out of stock" in failed.body
    low = notice_for(StockLow(account_id="a1", rule_id=3, available=1))
    assert low is not None and low.event is NotifyEvent.LOW_STOCK and "1 line" in low.body
    paid = notice_for(OrderPaid(account_id="a1", order_id="o1"))
    assert paid is not None and paid.event is NotifyEvent.ORDER_PAID


def test_a_cookie_in_a_reason_is_masked() -> None:
    reason = "rejected: cookie2=abcdef123; unb=2200001; _m_h5_tk=ffff_123 token=zzz&x=1"
    assert "abcdef123" not in redact(reason) and "ffff_123" not in redact(reason) and "zzz" not in redact(reason)
    notice = notice_for(LifecycleChanged(account_id="a1", lifecycle="error", reason=reason))
    assert notice is not None and "abcdef123" not in notice.body and "cookie2=***" in notice.body


def test_every_event_has_a_description() -> None:
    assert set(describe_events()) == set(NOTIFY_EVENTS)
