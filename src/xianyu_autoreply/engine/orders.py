"""OrderDesk: order tracking and the auto-delivery of virtual goods, exactly once, for every account of an engine.

Tracking: each order event (PROTOCOL §12) goes through `next_status`, a pure status machine (created -> paid ->
shipped -> completed, closed, refunding -> refunded or back), and the store appends each change to the order's
history with the buyer, item and chat.

Delivery, on "paid" (one unit per item bought):
1. `choose_rule` picks the rule (item id beats title keyword beats a general rule); no rule: nothing to deliver.
2. `claim_delivery` inserts (account, order, unit) under a unique key. Only the inserting worker owns the unit: a
   re-sent paid event, a reconnect, a restart or a second engine finds the row and stops there.
3. The rule's delay is counted from the claim (so a restart does not restart the wait).
4. Each attempt starts with a compare-and-set (`transition_delivery`: pending/failed at attempt n -> pending at
   n+1): of two workers that both see a unit due, one sends.
5. The goods: `text` (a template), `image` (a URL), `webhook` (POST to the seller's URL, deliver its answer) or
   `batch` (reserve a stock line -> send -> commit; released when the send provably failed). A webhook URL goes
   through the outbound policy (outbound.py) at every connection, redirects included: one it refuses ends the
   unit in `delivery_failed` at once, with the reason, and nothing reaches its target.
6. A failure that provably sent nothing is retried with backoff, then ends in `delivery_failed` with the reason.
   A send that may have reached the buyer (unconfirmed) is never retried: `delivery_failed` at once, its batch
   line kept reserved, so the goods are neither given twice nor handed to another buyer.
7. All units sent and the account's `auto_confirm` on (read at that moment, so a change applies at once): the
   shipment is confirmed through MTOP (§5.3) and the order moves to shipped.

Restart (the documented choice): a unit claimed but never attempted, or failed with a retry time, is resumed
(`sweep`, at start and every `sweep_interval`). An attempt is `pending` while it prepares the goods (rule, stock
line, webhook) and `sending` from just before the send: an attempt found stale in `pending` provably sent nothing
and is retried; one stale in `sending` cannot be known to be unsent, so it becomes `delivery_failed`
("interrupted"), never re-sent blindly, and the owner is notified. Paid orders without any claim (the process died
between the two writes) are picked up by the first sweep that sees their account connected.
Quantity: order events carry none, so an order's `quantity` is what the store holds (1 unless set there).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..outbound import OutboundGuard, OutboundRefused, Purpose, check_url
from ..platform.mtop_client import MtopClient
from ..platform.session import AccountSession, Reply, SendOutcome, Sent
from ..protocol import OrderEvent, OrderStatus
from ..replies.templates import TemplateError, TemplateValues, render
from ..store import (
    UNSET,
    Delivery,
    DeliveryKind,
    DeliveryRule,
    DeliveryState,
    InvalidTransition,
    NotFound,
    Order,
    OrderChange,
    ReservedLine,
    Store,
)
from ..store.cluster import Fence, FencedOut
from .events import (
    DeliveryFailed,
    DeliverySent,
    EventBus,
    OrderPaid,
    OrderShipped,
    OrderStatusChanged,
    ShipmentFailed,
    StockLow,
    StockReturned,
)

__all__ = ["DeliveryOptions", "OrderDesk", "choose_rule", "needs_title", "next_status", "webhook_answer"]

log = structlog.get_logger("xianyu_autoreply.orders")

# --- the status machine (pure) -----------------------------------------------------------------------------------

_FORWARD = {"created": 0, "paid": 1, "shipped": 2, "completed": 3}
_AFTER_PAYMENT = frozenset({"paid", "shipped", "completed"})


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
        return status if current in _AFTER_PAYMENT else None
    if status == "closed":
        return None if current == "completed" else status
    if status in _FORWARD:
        if current == "refunding":
            return status if _FORWARD[status] >= _FORWARD["shipped"] else None
        return status if _FORWARD[status] > _FORWARD.get(current, -1) else None
    return None


# --- the rule choice (pure) --------------------------------------------------------------------------------------


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
        return min(self.retry_cap, self.retry_base * 2 ** max(0, attempts - 1))


class _NotSent(Exception):
    """An attempt that provably sent nothing (no chat, no connection, no stock, webhook down): retry later."""


class _Permanent(Exception):
    """An attempt that can never succeed as configured (rule deleted, bad template): give up at once."""


class _WebhookServerError(Exception):
    """The seller's webhook answered 5xx: worth another try."""


Accounts = Callable[[], Iterable[str]]
SessionFor = Callable[[str], AccountSession | None]
ProxyFor = Callable[[str], str | None]
FenceFor = Callable[[str], Fence | None]


class OrderDesk:
    """Order tracking and auto-delivery for the accounts of one engine (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        mtop: MtopClient,
        bus: EventBus,
        session_for: SessionFor,
        proxy_for: ProxyFor = lambda account_id: None,
        fence_for: FenceFor = lambda account_id: None,
        options: DeliveryOptions | None = None,
        http: httpx.AsyncClient | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """`outbound` is the policy for webhook URLs (public addresses only when not given); an `http` client
        given here is used as it is, without it."""
        self.store = store
        self.mtop = mtop
        self.bus = bus
        self.options = options or DeliveryOptions()
        self._session_for = session_for
        self._proxy_for = proxy_for
        self._fence_for = fence_for  # scale-out: a node whose lease moved on must not claim a delivery
        self._outbound = outbound or OutboundGuard()
        self._owns_http = http is None
        self._http = http or self._outbound.http_client()
        self._active: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Events of one order are applied one after the other (striped: no lock per order to clean up).
        self._stripes = tuple(asyncio.Lock() for _ in range(64))
        self._titles: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._low: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._accounts: Accounts = lambda: ()
        self._checked: set[str] = set()  # accounts already searched for paid orders never claimed

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self, accounts: Accounts) -> None:
        """Sweep for due and orphaned deliveries of `accounts()` (those this engine serves), now and periodically."""
        self._accounts = accounts
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="order-desk:sweep")

    async def aclose(self) -> None:
        """Stop sweeping and cancel deliveries in progress (a cancelled unit is resumed by the next engine)."""
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._sweeper = None
        if self._owns_http:
            await self._http.aclose()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no delivery task runs (tests, graceful shutdown)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _stripe(self, account_id: str, order_id: str) -> asyncio.Lock:
        return self._stripes[hash((account_id, order_id)) % len(self._stripes)]

    # --- events --------------------------------------------------------------------------------------------------

    async def on_event(self, account_id: str, event: OrderEvent) -> OrderChange | None:
        """Track an order event; on "paid" start the delivery in the background. Returns the change, if any."""
        if not event.order_id:
            log.info("order event without an order id", account_id=account_id, status=event.status.value)
            return None
        async with self._stripe(account_id, event.order_id):
            change = await self._track(account_id, event)
        if change is None:
            if event.status is OrderStatus.PAID:
                # A re-sent paid event: harmless (the claim is unique), and it revives an order whose delivery
                # was never claimed (the process died between the two writes).
                self._schedule(account_id, event.order_id)
            return None
        order = change.order
        if change.status_changed:
            self.bus.publish(
                OrderStatusChanged(
                    account_id=account_id,
                    order_id=order.order_id,
                    status=order.status,
                    previous=change.previous_status,
                    item_id=order.item_id,
                    chat_id=order.chat_id,
                )
            )
        if order.status == "paid":
            if change.status_changed:
                self.bus.publish(OrderPaid(account_id=account_id, order_id=order.order_id, item_id=order.item_id))
            self._schedule(account_id, order.order_id)
        elif order.status in ("refunded", "closed") and change.previous_status in {*_AFTER_PAYMENT, "refunding"}:
            await self._return_lines(order)
        return change

    async def _track(self, account_id: str, event: OrderEvent) -> OrderChange | None:
        assert event.order_id is not None
        try:
            current: Order | None = await self.store.get_order(account_id, event.order_id)
        except NotFound:
            current = None
        history = [e.status for e in current.history] if current is not None else []
        status = next_status(current.status if current else None, event.status, history=history)
        fields = {"buyer_id": event.buyer_id, "item_id": event.item_id, "chat_id": event.chat_id}
        if status is None:
            if current is not None and any(getattr(current, k) is None and v for k, v in fields.items()):
                await self.store.record_order(account_id, event.order_id, status=current.status, **fields)
            return None
        detail = {"event": event.status.value, "message_id": event.message_id, "text": event.text[:200]}
        return await self.store.record_order(account_id, event.order_id, status=status, detail=detail, **fields)

    # --- sweeping ------------------------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # No traceback: its locals could hold goods (card codes) or cookies.
                log.error("delivery sweep failed", error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(self.options.sweep_interval)

    async def sweep(self) -> int:
        """Start work for every due delivery of the served accounts; returns how many orders were scheduled."""
        accounts = list(self._accounts())
        if not accounts:
            return 0
        keys = {(d.account_id, d.order_id) for d in await self.store.list_due_deliveries(account_ids=accounts)}
        for account_id in accounts:
            if account_id in self._checked:
                continue
            for order in await self.store.list_orders(account_id, status="paid", limit=500):
                if not order.deliveries:
                    keys.add((account_id, order.order_id))
            self._checked.add(account_id)
        scheduled = 0
        for account_id, order_id in sorted(keys):
            scheduled += self._schedule(account_id, order_id)
        return scheduled

    def _schedule(self, account_id: str, order_id: str) -> bool:
        key = (account_id, order_id)
        if key in self._active:
            return False
        self._active.add(key)
        task = asyncio.get_running_loop().create_task(self._run_order(account_id, order_id), name=f"deliver:{order_id}")
        self._tasks.add(task)

        def done(finished: asyncio.Task[Any]) -> None:
            self._tasks.discard(finished)
            self._active.discard(key)

        task.add_done_callback(done)
        return True

    # --- one order -----------------------------------------------------------------------------------------------

    async def _run_order(self, account_id: str, order_id: str) -> None:
        try:
            await self._deliver_order(account_id, order_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error(
                "delivery of an order failed",
                account_id=account_id,
                order_id=order_id,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )

    async def _deliver_order(self, account_id: str, order_id: str) -> None:
        order = await self.store.get_order(account_id, order_id)
        existing = {d.unit: d for d in order.deliveries}
        if order.status != "paid" and not existing:
            return  # refunded, closed or shipped by hand before any delivery was claimed
        rule: DeliveryRule | None = None
        for unit in range(1, order.quantity + 1):
            if unit not in existing:
                if order.status != "paid":
                    break  # no new claims once the order left "paid"
                if rule is None:
                    rule, order = await self._choose(order)
                    if rule is None:
                        log.info("no delivery rule for the order", account_id=account_id, order_id=order_id)
                        return
                try:
                    await self.store.claim_delivery(
                        account_id, order_id, unit, rule_id=rule.id, fence=self._fence_for(account_id)
                    )
                except FencedOut:
                    log.warning("delivery left to the account's new owner", account_id=account_id, order_id=order_id)
                    return
            if unit > 1:
                await asyncio.sleep(self.options.unit_gap)
            await self._drive_unit(order, unit)
        deliveries = await self.store.get_deliveries(account_id, order_id)
        if len(deliveries) == order.quantity and all(d.state is DeliveryState.SENT for d in deliveries):
            await self._confirm(account_id, order_id)

    async def _choose(self, order: Order) -> tuple[DeliveryRule | None, Order]:
        rules = await self.store.list_delivery_rules(order.account_id)
        if order.item_title is None and order.item_id and needs_title(rules, item_id=order.item_id):
            title = await self._item_title(order.account_id, order.item_id)
            if title:
                change = await self.store.record_order(
                    order.account_id, order.order_id, status=order.status, item_title=title
                )
                order = change.order
        return choose_rule(rules, item_id=order.item_id, item_title=order.item_title), order

    async def _item_title(self, account_id: str, item_id: str) -> str | None:
        cached = self._titles.get((account_id, item_id))
        if cached is not None:
            return cached
        session = self._session_for(account_id)
        if session is None:
            return None
        try:
            async with asyncio.timeout(self.options.title_timeout):
                detail = await self.mtop.item_detail(
                    session.cookie_jar, item_id=item_id, proxy=self._proxy_for(account_id)
                )
        except Exception as exc:
            log.warning("item title unavailable", account_id=account_id, item_id=item_id, error=type(exc).__name__)
            return None
        self._titles[(account_id, item_id)] = detail.title
        while len(self._titles) > 1024:
            self._titles.popitem(last=False)
        return detail.title or None

    async def _drive_unit(self, order: Order, unit: int) -> None:
        """Attempt one unit until it is sent, given up, or owned by someone else."""
        while True:
            delivery = await self._delivery(order, unit)
            if delivery is None or delivery.state in (DeliveryState.SENT, DeliveryState.DELIVERY_FAILED):
                return
            if delivery.state is DeliveryState.SENDING or (
                delivery.state is DeliveryState.PENDING and delivery.attempts > 0
            ):
                if not await self._maybe_interrupted(delivery):
                    return
                continue  # provably unsent: retried at once
            await self._wait_until_due(delivery)
            started = await self.store.transition_delivery(
                order.account_id,
                order.order_id,
                unit,
                from_state=delivery.state,
                from_attempts=delivery.attempts,
                state=DeliveryState.PENDING,
                error=None,
                count_attempt=True,
            )
            if started is None:
                continue  # someone else moved it meanwhile: look again
            fresh = await self.store.get_order(order.account_id, order.order_id)
            await self._attempt(fresh, started)

    async def _delivery(self, order: Order, unit: int) -> Delivery | None:
        for delivery in await self.store.get_deliveries(order.account_id, order.order_id):
            if delivery.unit == unit:
                return delivery
        return None

    async def _wait_until_due(self, delivery: Delivery) -> None:
        if delivery.state is DeliveryState.FAILED:
            due = delivery.next_attempt_at
        else:
            delay = 0.0
            if delivery.rule_id is not None:
                with contextlib.suppress(NotFound):
                    delay = (await self.store.get_delivery_rule(delivery.rule_id)).delay_seconds
            due = delivery.created_at + timedelta(seconds=delay)
        if due is not None:
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _maybe_interrupted(self, delivery: Delivery) -> bool:
        """An attempt in flight (here: after a crash, or in another engine), once it is stale: a `pending` one sent
        nothing and is retried (True); a `sending` one may have reached the buyer and is given up."""
        age = (datetime.now(UTC) - delivery.updated_at).total_seconds()
        if age < self.options.stale_after:
            return False
        if delivery.state is DeliveryState.PENDING:
            retry = await self.store.transition_delivery(
                delivery.account_id,
                delivery.order_id,
                delivery.unit,
                from_state=DeliveryState.PENDING,
                from_attempts=delivery.attempts,
                state=DeliveryState.FAILED,
                error="interrupted before sending; nothing left: retried",
                next_attempt_at=datetime.now(UTC),
            )
            return retry is not None
        reason = "interrupted while sending: it may have reached the buyer, so it is not re-sent; check the chat"
        moved = await self.store.transition_delivery(
            delivery.account_id,
            delivery.order_id,
            delivery.unit,
            from_state=DeliveryState.SENDING,
            from_attempts=delivery.attempts,
            state=DeliveryState.DELIVERY_FAILED,
            error=reason,
        )
        if moved is not None:
            self._publish_failed(moved)
        return False

    # --- one attempt ---------------------------------------------------------------------------------------------

    async def _attempt(self, order: Order, delivery: Delivery) -> None:
        """Send one unit once; record sent, failed (retry later) or delivery_failed."""
        line: ReservedLine | None = None
        sending = False
        try:
            rule = await self._rule(delivery)
            session = self._session_for(order.account_id)
            if not order.chat_id or not order.buyer_id:
                raise _NotSent("the order has no chat with the buyer yet")
            if session is None:
                raise _NotSent("the account is not connected")
            if rule.kind is DeliveryKind.BATCH:
                line = await self.store.reserve_line(rule.id, order.order_id, unit=delivery.unit)
                if line is None:
                    self._warn_low(order.account_id, rule.id, 0, force=True)
                    raise _NotSent("out of stock")
                reply = Reply(text=line.content, source=f"delivery:{rule.id}")
            else:
                reply = await self._content(order, rule, delivery.unit)
            on_the_wire = await self.store.transition_delivery(
                delivery.account_id,
                delivery.order_id,
                delivery.unit,
                from_state=DeliveryState.PENDING,
                from_attempts=delivery.attempts,
                state=DeliveryState.SENDING,
            )
            if on_the_wire is None:
                log.info("delivery attempt taken over elsewhere", order_id=order.order_id, unit=delivery.unit)
                return  # its unit (and reserved line) belong to the worker that moved it
            sending = True
            sent = await session.send(order.chat_id, order.buyer_id, reply, wait_s=self.options.send_wait)
        except asyncio.CancelledError:
            if not sending:
                # Provably nothing left: hand the unit back for the next worker before going.
                await asyncio.shield(self._release_and_retry(delivery, line, "cancelled before sending", now=True))
            raise
        except (_NotSent, _Permanent) as exc:
            await self._release_and_retry(delivery, line, str(exc), permanent=isinstance(exc, _Permanent))
            return
        except Exception as exc:
            if sending:
                await self._unconfirmed(delivery, line, f"{type(exc).__name__}: {exc}")
            else:
                await self._release_and_retry(delivery, line, f"{type(exc).__name__}: {exc}")
            return
        await self._after_send(order, delivery, rule, line, sent)

    async def _after_send(
        self, order: Order, delivery: Delivery, rule: DeliveryRule, line: ReservedLine | None, sent: Sent
    ) -> None:
        if sent.ok:
            if line is not None:
                await self.store.commit_line(line.id)
            done = await self.store.update_delivery(
                order.account_id,
                order.order_id,
                delivery.unit,
                state=DeliveryState.SENT,
                stock_line_id=line.id if line is not None else UNSET,
                count_attempt=False,
            )
            self.bus.publish(
                DeliverySent(
                    account_id=order.account_id,
                    order_id=order.order_id,
                    unit=done.unit,
                    rule_id=rule.id,
                    rule_kind=rule.kind.value,
                    attempts=done.attempts,
                )
            )
            if line is not None:
                counts = await self.store.stock_counts(rule.id)
                self._warn_low(order.account_id, rule.id, counts.available, threshold=rule.low_stock_threshold)
            return
        error = sent.error or "send failed"
        if sent.outcome is SendOutcome.UNCONFIRMED:
            await self._unconfirmed(delivery, line, error)
        else:
            await self._release_and_retry(delivery, line, f"send failed: {error}")

    async def _rule(self, delivery: Delivery) -> DeliveryRule:
        if delivery.rule_id is None:
            raise _Permanent("its delivery rule was deleted")
        try:
            rule = await self.store.get_delivery_rule(delivery.rule_id)
            if rule.kind is not DeliveryKind.BATCH:
                # Revealed only for the kinds whose content is the goods (a batch rule's lines stay encrypted).
                rule = await self.store.get_delivery_rule(delivery.rule_id, reveal=True)
        except NotFound:
            raise _Permanent("its delivery rule was deleted") from None
        return rule

    async def _content(self, order: Order, rule: DeliveryRule, unit: int) -> Reply:
        source = f"delivery:{rule.id}"
        if rule.kind is DeliveryKind.IMAGE:
            if not rule.content:
                raise _Permanent("the image rule has no image URL")
            return Reply(image_url=rule.content, source=source)
        if rule.kind is DeliveryKind.WEBHOOK:
            if not rule.content:
                raise _Permanent("the webhook rule has no URL")
            return Reply(text=await self._webhook(rule.content, order, unit), source=source)
        account = await self.store.get_account(order.account_id)
        values = TemplateValues(
            buyer_name=order.buyer_nick,
            item_id=order.item_id,
            item_title=order.item_title,
            order_id=order.order_id,
            account_name=account.remark or account.id,
        )
        try:
            text = render(rule.content or "", values)
        except TemplateError as exc:
            raise _Permanent(f"the text rule's template is invalid: {exc}") from None
        if not text.strip():
            raise _Permanent("the text rule is empty")
        return Reply(text=text, source=source)

    async def _webhook(self, url: str, order: Order, unit: int) -> str:
        """POST the order to the seller's URL and deliver what it answers; retried on transport errors and 5xx.

        A URL the outbound policy refuses (its scheme, or an address of its host at connect time) is permanent.
        """
        try:
            check_url(url, self._outbound.policy, purpose=Purpose.WEBHOOK)
        except OutboundRefused as exc:
            raise _Permanent(f"webhook refused: {exc.reason}") from None
        payload = {
            "account_id": order.account_id,
            "order_id": order.order_id,
            "unit": unit,
            "quantity": order.quantity,
            "item_id": order.item_id,
            "item_title": order.item_title,
            "buyer_id": order.buyer_id,
            "buyer_nick": order.buyer_nick,
        }
        # The same key on every try: the seller's server can recognise our retries of one unit.
        headers = {"Idempotency-Key": f"{order.account_id}:{order.order_id}:{unit}"}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.webhook_attempts),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            retry=retry_if_exception_type((httpx.TransportError, _WebhookServerError)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._http.post(
                        url, json=payload, headers=headers, timeout=self.options.webhook_timeout
                    )
                    if response.status_code >= 500:
                        raise _WebhookServerError(f"HTTP {response.status_code}")
                    if response.status_code >= 400:
                        raise _NotSent(f"webhook refused: HTTP {response.status_code}")
                    content = webhook_answer(response.content)
                    if not content:
                        raise _NotSent("webhook answered nothing to deliver")
                    return content
        except (httpx.TransportError, _WebhookServerError) as exc:
            raise _NotSent(f"webhook failed: {type(exc).__name__} {exc}".strip()) from None
        except OutboundRefused as exc:  # at connect time: the host, or a redirect's, resolves somewhere refused
            raise _Permanent(f"webhook refused: {exc.reason}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # --- outcomes ------------------------------------------------------------------------------------------------

    async def _release_and_retry(
        self,
        delivery: Delivery,
        line: ReservedLine | None,
        reason: str,
        *,
        permanent: bool = False,
        now: bool = False,
    ) -> None:
        """Nothing reached the buyer: the line goes back to stock, the unit is retried later or given up."""
        if line is not None:
            try:
                await self.store.release_line(line.id)
            except InvalidTransition:
                log.warning("stock line not released", line_id=line.id)
        give_up = permanent or delivery.attempts >= self.options.max_attempts
        if give_up:
            done = await self.store.update_delivery(
                delivery.account_id,
                delivery.order_id,
                delivery.unit,
                state=DeliveryState.DELIVERY_FAILED,
                error=reason,
                count_attempt=False,
            )
            self._publish_failed(done)
            return
        wait = 0.0 if now else self.options.retry_delay(delivery.attempts)
        await self.store.update_delivery(
            delivery.account_id,
            delivery.order_id,
            delivery.unit,
            state=DeliveryState.FAILED,
            error=reason,
            next_attempt_at=datetime.now(UTC) + timedelta(seconds=wait),
            count_attempt=False,
        )
        log.info(
            "delivery attempt failed; will retry",
            account_id=delivery.account_id,
            order_id=delivery.order_id,
            unit=delivery.unit,
            attempts=delivery.attempts,
            error=reason,
            retry_in=wait,
        )

    async def _unconfirmed(self, delivery: Delivery, line: ReservedLine | None, reason: str) -> None:
        """The send may have reached the buyer: never retried; its line stays reserved for this unit."""
        done = await self.store.update_delivery(
            delivery.account_id,
            delivery.order_id,
            delivery.unit,
            state=DeliveryState.DELIVERY_FAILED,
            error=f"{reason}; not re-sent since it may have reached the buyer: check the chat",
            stock_line_id=line.id if line is not None else UNSET,
            count_attempt=False,
        )
        self._publish_failed(done)

    def _publish_failed(self, delivery: Delivery) -> None:
        log.warning(
            "delivery failed",
            account_id=delivery.account_id,
            order_id=delivery.order_id,
            unit=delivery.unit,
            error=delivery.error,
        )
        self.bus.publish(
            DeliveryFailed(
                account_id=delivery.account_id,
                order_id=delivery.order_id,
                unit=delivery.unit,
                rule_id=delivery.rule_id,
                error=delivery.error,
                attempts=delivery.attempts,
            )
        )

    def _warn_low(
        self, account_id: str, rule_id: int, available: int, *, threshold: int = 0, force: bool = False
    ) -> None:
        """Publish `stock.low` once when a rule falls to its threshold (again after it was refilled)."""
        if not force and available > threshold:
            self._low.discard(rule_id)
            return
        if rule_id in self._low:
            return
        self._low.add(rule_id)
        self.bus.publish(StockLow(account_id=account_id, rule_id=rule_id, available=available, threshold=threshold))

    async def _confirm(self, account_id: str, order_id: str) -> None:
        """Confirm shipment when the account's auto-confirm is on now; the order then moves to shipped."""
        account = await self.store.get_account(account_id)
        if not account.auto_confirm:
            return
        order = await self.store.get_order(account_id, order_id)
        if order.status != "paid":
            return
        error = "the account is not connected"
        for attempt in range(1, self.options.confirm_attempts + 1):
            session = self._session_for(account_id)
            if session is not None:
                try:
                    await self.mtop.confirm_shipment(
                        session.cookie_jar, order_id=order_id, proxy=self._proxy_for(account_id)
                    )
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    async with self._stripe(account_id, order_id):
                        current = await self.store.get_order(account_id, order_id)
                        if next_status(current.status, "shipped") == "shipped":
                            await self.store.record_order(
                                account_id, order_id, status="shipped", detail={"event": "auto_confirm"}
                            )
                    self.bus.publish(OrderShipped(account_id=account_id, order_id=order_id, source="auto_confirm"))
                    return
            if attempt < self.options.confirm_attempts:
                await asyncio.sleep(self.options.retry_delay(attempt))
        log.warning("shipment not confirmed", account_id=account_id, order_id=order_id, error=error)
        self.bus.publish(ShipmentFailed(account_id=account_id, order_id=order_id, error=error))

    async def _return_lines(self, order: Order) -> None:
        """After a refund: each delivered batch line goes back to stock or to `returned`, as its rule says."""
        for delivery in order.deliveries:
            if delivery.stock_line_id is None or delivery.state is not DeliveryState.SENT:
                continue
            try:
                state = await self.store.return_line(delivery.stock_line_id)
            except (InvalidTransition, NotFound):
                continue  # already returned (a repeated refund event)
            self.bus.publish(
                StockReturned(
                    account_id=order.account_id,
                    order_id=order.order_id,
                    unit=delivery.unit,
                    rule_id=delivery.rule_id,
                    state=state.value,
                )
            )


def webhook_answer(body: bytes) -> str:
    """What a webhook answered to deliver: a JSON object's `content`/`text`/`data` string, else the body text."""
    text = body.decode("utf-8", errors="replace").strip()
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if isinstance(doc, dict):
            for key in ("content", "text", "data"):
                value = doc.get(key)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            return ""
    return text
