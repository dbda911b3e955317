"""OrderDesk: tracks the orders of an engine's accounts, claims their units and hands each to the Courier.

Order level only (see the package notes): events through `next_status`, one claim per unit, the sweep that
resumes due and orphaned deliveries, the auto-confirm of a shipment and the return of lines after a refund. One
unit's attempts and their outcomes are the Courier's (courier.py); the webhook is a `GoodsWebhook` (webhook.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import structlog

from ...outbound import OutboundGuard
from ...platform.mtop_client import MtopApi
from ...protocol import OrderEvent, OrderStatus
from ...store import DeliveryRule, DeliveryState, InvalidTransition, NotFound, Order, OrderChange, Store
from ...store.cluster import Fence, FencedOut
from ..events import EventBus, OrderPaid, OrderShipped, OrderStatusChanged, ShipmentFailed, StockReturned
from .courier import AccountLink, Courier, SessionFor
from .machine import DeliveryOptions, all_sent, choose_rule, needs_title, next_status, takes_goods_back
from .webhook import GoodsWebhook, HttpGoodsWebhook

log = structlog.get_logger("xianyu_autoreply.orders")

Accounts = Callable[[], Iterable[str]]
ProxyFor = Callable[[str], str | None]
FenceFor = Callable[[str], Fence | None]


class OrderDesk:
    """Order tracking and auto-delivery for the accounts of one engine (see the package notes)."""

    def __init__(
        self,
        *,
        store: Store,
        mtop: MtopApi,
        bus: EventBus,
        session_for: SessionFor,
        proxy_for: ProxyFor = lambda account_id: None,
        fence_for: FenceFor = lambda account_id: None,
        options: DeliveryOptions | None = None,
        webhook: GoodsWebhook | None = None,
        http: httpx.AsyncClient | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """`webhook` gives a webhook rule's goods; without it, an `HttpGoodsWebhook` under `outbound` (public
        addresses only when not given), through `http` when given (used as it is, without the policy)."""
        self.store = store
        self.mtop = mtop
        self.bus = bus
        self.options = options or DeliveryOptions()
        self._session_for = session_for
        self._proxy_for = proxy_for
        self._fence_for = fence_for  # scale-out: a node whose lease moved on must not claim a delivery
        self._own_webhook: HttpGoodsWebhook | None = None
        if webhook is None:
            webhook = self._own_webhook = HttpGoodsWebhook(
                outbound=outbound,
                http=http,
                timeout=self.options.webhook_timeout,
                attempts=self.options.webhook_attempts,
            )
        self._courier = Courier(
            store=store,
            bus=bus,
            options=self.options,
            session_for=self._session,
            webhook=webhook,
        )
        self._active: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Events of one order are applied one after the other (striped: no lock per order to clean up).
        self._stripes = tuple(asyncio.Lock() for _ in range(64))
        self._titles: OrderedDict[tuple[str, str], str] = OrderedDict()
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
        if self._own_webhook is not None:
            await self._own_webhook.aclose()

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until no delivery task runs (tests, graceful shutdown)."""
        async with asyncio.timeout(timeout):
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _session(self, account_id: str) -> AccountLink | None:
        # `_session_for` read at each call: it is the desk's seam to the sessions (a test swaps it).
        return self._session_for(account_id)

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
        elif takes_goods_back(order.status, change.previous_status):
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
        fields: dict[str, Any] = {"buyer_id": event.buyer_id, "item_id": event.item_id, "chat_id": event.chat_id}
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
            await self._courier.drive(order, unit)
        deliveries = await self.store.get_deliveries(account_id, order_id)
        if all_sent(deliveries, quantity=order.quantity):
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

    # --- auto-confirm and refunds --------------------------------------------------------------------------------

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
