"""The decisions of order tracking and delivery, pure: plain values in, a status, a rule, goods or a verdict out.

No I/O and no event loop here: the desk (desk.py) reads the store, asks these functions, and writes what they
decide. Failures of an attempt are types (`NotSent`, `Permanent`), never parsed from their text (DESIGN §3).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from ...protocol import OrderStatus
from ...replies.templates import TemplateError, TemplateValues, render
from ...store.records import Delivery, DeliveryRule, DeliveryState, Order

__all__ = [
    "AFTER_PAYMENT",
    "DeliveryOptions",
    "NotSent",
    "Permanent",
    "Stale",
    "UnitStep",
    "all_sent",
    "choose_rule",
    "due_at",
    "needs_title",
    "next_status",
    "stale_verdict",
    "takes_goods_back",
    "text_goods",
    "unit_step",
]

# --- the status machine ------------------------------------------------------------------------------------------

_FORWARD = {"created": 0, "paid": 1, "shipped": 2, "completed": 3}
AFTER_PAYMENT = frozenset({"paid", "shipped", "completed"})


def next_status(current: str | None, incoming: OrderStatus | str, *, history: Sequence[str] = ()) -> str | None:
    """The order's status after an event, or None when the event changes nothing (repeat, stale, not allowed).

    Forward moves only (a late "paid" after "shipped" is stale); closed and refunded are final (closed may still
    become refunded); `refund_cancelled` returns to the status before the refund request, read from `history`.
    """
    status = str(incoming)
    if status == current:
        return None
    if current is None:
        return None if status == OrderStatus.REFUND_CANCELLED else status
    if current == "refunded":
        return None
    if current == "closed":
        return status if status == "refunded" else None
    if status == "refunded":
        return status
    if status == "refund_cancelled":
        if current != "refunding":
            return None
        before = [s for s in history if s not in ("refunding", "refund_cancelled")]
        return before[-1] if before else "paid"
    if status == "refunding":
        return status if current in AFTER_PAYMENT else None
    if status == "closed":
        return None if current == "completed" else status
    if status in _FORWARD:
        if current == "refunding":
            return status if _FORWARD[status] >= _FORWARD["shipped"] else None
        return status if _FORWARD[status] > _FORWARD.get(current, -1) else None
    return None


def takes_goods_back(status: str, previous: str | None) -> bool:
    """True when a move ends a paid order without a sale (refunded, closed), so delivered batch lines return."""
    return status in ("refunded", "closed") and previous in {*AFTER_PAYMENT, "refunding"}


# --- the rule choice ---------------------------------------------------------------------------------------------


def choose_rule(rules: Sequence[DeliveryRule], *, item_id: str | None, item_title: str | None) -> DeliveryRule | None:
    """The delivery rule for an item: its own (item id) first, then a title keyword, then a general rule.

    Within a tier the seller's order (position) decides. A rule bound to another item never applies; a keyword
    rule needs the title (case-insensitive substring).
    """
    enabled = [rule for rule in rules if rule.enabled]
    if item_id:
        for rule in enabled:
            if rule.item_id == item_id:
                return rule
    if item_title:
        title = item_title.casefold()
        for rule in enabled:
            if not rule.item_id and rule.title_keyword and rule.title_keyword.casefold() in title:
                return rule
    for rule in enabled:
        if not rule.item_id and not rule.title_keyword:
            return rule
    return None


def needs_title(rules: Sequence[DeliveryRule], *, item_id: str | None) -> bool:
    """True when only the item's title can decide between the rules (worth an item-detail call)."""
    enabled = [rule for rule in rules if rule.enabled]
    if item_id and any(rule.item_id == item_id for rule in enabled):
        return False
    return any(not rule.item_id and rule.title_keyword for rule in enabled)


# --- tuning ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """Delivery tuning; the defaults suit production, tests shorten them."""

    max_attempts: int = 5  # attempts per unit before `delivery_failed`
    retry_base: float = 5.0  # backoff after attempt n: min(cap, base * 2**(n-1)) seconds
    retry_cap: float = 600.0
    sweep_interval: float = 30.0  # look for due retries and orphaned claims this often
    stale_after: float = 300.0  # an attempt in flight this long without news was interrupted
    send_wait: float = 30.0  # wait for a connection this long before a send counts as failed
    unit_gap: float = 1.0  # between the units of one multi-quantity order
    webhook_timeout: float = 10.0
    webhook_attempts: int = 3
    confirm_attempts: int = 3
    title_timeout: float = 10.0

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (data, not arithmetic in the loop)."""
        return min(self.retry_cap, self.retry_base * 2.0 ** max(0, attempts - 1))

    def gives_up(self, attempts: int, *, permanent: bool = False) -> bool:
        """True when an attempt that sent nothing is the last: it can never succeed, or none are left."""
        return permanent or attempts >= self.max_attempts


# --- failures of an attempt (by type) ----------------------------------------------------------------------------


class NotSent(Exception):
    """An attempt that provably sent nothing (no chat, no connection, no stock, webhook down): retry later."""


class Permanent(Exception):
    """An attempt that can never succeed as configured (rule deleted, bad template): give up at once."""


# --- the goods ---------------------------------------------------------------------------------------------------


def text_goods(rule: DeliveryRule, order: Order, *, account_name: str) -> str:
    """The text a `text` rule delivers for an order: its template rendered; `Permanent` when it cannot be."""
    values = TemplateValues(
        buyer_name=order.buyer_nick,
        item_id=order.item_id,
        item_title=order.item_title,
        order_id=order.order_id,
        account_name=account_name,
    )
    try:
        text = render(rule.content or "", values)
    except TemplateError as exc:
        raise Permanent(f"the text rule's template is invalid: {exc}") from None
    if not text.strip():
        raise Permanent("the text rule is empty")
    return text


# --- one unit's state --------------------------------------------------------------------------------------------


class UnitStep(enum.Enum):
    """What to do next with a unit, from its stored state."""

    DONE = enum.auto()  # sent or given up: nothing more, ever
    IN_FLIGHT = enum.auto()  # an attempt is running here or elsewhere, or was interrupted: see `stale_verdict`
    DUE = enum.auto()  # claimed or failed: wait until `due_at`, then start an attempt


def unit_step(delivery: Delivery | None) -> UnitStep:
    """The next step for a unit (None: no claim, nothing to do)."""
    if delivery is None or delivery.state in (DeliveryState.SENT, DeliveryState.DELIVERY_FAILED):
        return UnitStep.DONE
    if delivery.state is DeliveryState.SENDING or (delivery.state is DeliveryState.PENDING and delivery.attempts > 0):
        return UnitStep.IN_FLIGHT
    return UnitStep.DUE


class Stale(enum.Enum):
    """An attempt in flight, judged by its age and state."""

    RUNNING = enum.auto()  # not stale yet: leave it to its worker
    RETRY = enum.auto()  # stale in `pending`: it provably sent nothing, so it is retried
    GIVE_UP = enum.auto()  # stale in `sending`: it may have reached the buyer, so it is never re-sent


def stale_verdict(delivery: Delivery, *, now: datetime, stale_after: float) -> Stale:
    """The verdict on an attempt in flight: still running, safe to retry, or to give up (`delivery_failed`)."""
    if (now - delivery.updated_at).total_seconds() < stale_after:
        return Stale.RUNNING
    return Stale.RETRY if delivery.state is DeliveryState.PENDING else Stale.GIVE_UP


def due_at(delivery: Delivery, *, delay_seconds: float) -> datetime | None:
    """When a unit's next attempt may start: a failed one at its retry time, a claimed one after the rule's delay
    counted from the claim (so a restart does not restart the wait)."""
    if delivery.state is DeliveryState.FAILED:
        return delivery.next_attempt_at
    return delivery.created_at + timedelta(seconds=delay_seconds)


def all_sent(deliveries: Sequence[Delivery], *, quantity: int) -> bool:
    """True when every unit of an order was sent (then its shipment may be confirmed)."""
    return len(deliveries) == quantity and all(d.state is DeliveryState.SENT for d in deliveries)
