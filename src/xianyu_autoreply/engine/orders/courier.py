"""The Courier: carries one claimed unit of an order to the buyer, exactly once (steps 3-6 of the package notes).

Each attempt starts with a compare-and-set (pending/failed at attempt n -> pending at n+1), prepares the goods in
`pending` and moves to `sending` just before the send. What became of it is decided by type: `NotSent` and
`Permanent` from the preparation, `Sent.outcome` from the send; never by the text of an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, assert_never

import structlog

from ...platform.cookie_jar import CookieJar
from ...platform.values import Reply, SendOutcome, Sent
from ...store import (
    UNSET,
    Delivery,
    DeliveryKind,
    DeliveryRule,
    DeliveryState,
    InvalidTransition,
    NotFound,
    Order,
    ReservedLine,
    Store,
)
from ..events import DeliveryFailed, DeliverySent, EventBus, StockLow
from .machine import DeliveryOptions, NotSent, Permanent, Stale, UnitStep, due_at, stale_verdict, text_goods, unit_step
from .webhook import GoodsWebhook, WebhookBlocked, WebhookError

log = structlog.get_logger("xianyu_autoreply.orders")


class AccountLink(Protocol):
    """What the desk needs of an account that is online: its cookie (MTOP calls) and a way to send (the
    account's pipeline, which logs every send)."""

    @property
    def cookie_jar(self) -> CookieJar: ...

    async def send(
        self, chat_id: str, to_user: str, reply: Reply, *, in_reply_to: str | None = None, wait_s: float = 30.0
    ) -> Sent: ...


SessionFor = Callable[[str], AccountLink | None]


class Courier:
    """Attempts, the sending state and their outcomes for the units the desk claimed."""

    def __init__(
        self,
        *,
        store: Store,
        bus: EventBus,
        options: DeliveryOptions,
        session_for: SessionFor,
        webhook: GoodsWebhook,
    ) -> None:
        self.store = store
        self.bus = bus
        self.options = options
        self._session_for = session_for
        self._webhook = webhook
        self._low: set[int] = set()  # rules whose `stock.low` was published (again after a refill)

    async def drive(self, order: Order, unit: int) -> None:
        """Attempt one unit until it is sent, given up, or owned by someone else."""
        while True:
            delivery = await self._delivery(order, unit)
            step = unit_step(delivery)
            if step is UnitStep.DONE or delivery is None:
                return
            if step is UnitStep.IN_FLIGHT:
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
        delay = 0.0
        if delivery.state is not DeliveryState.FAILED and delivery.rule_id is not None:
            with contextlib.suppress(NotFound):
                delay = (await self.store.get_delivery_rule(delivery.rule_id)).delay_seconds
        due = due_at(delivery, delay_seconds=delay)
        if due is not None:
            wait = (due - datetime.now(UTC)).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _maybe_interrupted(self, delivery: Delivery) -> bool:
        """An attempt in flight (here: after a crash, or in another engine), once it is stale: a `pending` one sent
        nothing and is retried (True); a `sending` one may have reached the buyer and is given up."""
        verdict = stale_verdict(delivery, now=datetime.now(UTC), stale_after=self.options.stale_after)
        if verdict is Stale.RUNNING:
            return False
        if verdict is Stale.RETRY:
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
                raise NotSent("the order has no chat with the buyer yet")
            if session is None:
                raise NotSent("the account is not connected")
            if rule.kind is DeliveryKind.BATCH:
                line = await self.store.reserve_line(rule.id, order.order_id, unit=delivery.unit)
                if line is None:
                    self._warn_low(order.account_id, rule.id, 0, force=True)
                    raise NotSent("out of stock")
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
        except NotSent as exc:
            await self._release_and_retry(delivery, line, str(exc))
            return
        except Permanent as exc:
            await self._release_and_retry(delivery, line, str(exc), permanent=True)
            return
        except Exception as exc:
            if sending:  # raised by the send itself: it may have left
                await self._unconfirmed(delivery, line, f"{type(exc).__name__}: {exc}")
            else:
                await self._release_and_retry(delivery, line, f"{type(exc).__name__}: {exc}")
            return
        await self._after_send(order, delivery, rule, line, sent)

    async def _after_send(
        self, order: Order, delivery: Delivery, rule: DeliveryRule, line: ReservedLine | None, sent: Sent
    ) -> None:
        match sent.outcome:
            case SendOutcome.CONFIRMED:
                await self._sent(order, delivery, rule, line)
            case SendOutcome.NOT_SENT:
                await self._release_and_retry(delivery, line, f"send failed: {sent.error or 'send failed'}")
            case SendOutcome.UNCONFIRMED:
                await self._unconfirmed(delivery, line, sent.error or "send failed")
            case unknown:
                assert_never(unknown)

    async def _sent(self, order: Order, delivery: Delivery, rule: DeliveryRule, line: ReservedLine | None) -> None:
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

    async def _rule(self, delivery: Delivery) -> DeliveryRule:
        if delivery.rule_id is None:
            raise Permanent("its delivery rule was deleted")
        try:
            rule = await self.store.get_delivery_rule(delivery.rule_id)
            if rule.kind is not DeliveryKind.BATCH:
                # Revealed only for the kinds whose content is the goods (a batch rule's lines stay encrypted).
                rule = await self.store.get_delivery_rule(delivery.rule_id, reveal=True)
        except NotFound:
            raise Permanent("its delivery rule was deleted") from None
        return rule

    async def _content(self, order: Order, rule: DeliveryRule, unit: int) -> Reply:
        source = f"delivery:{rule.id}"
        if rule.kind is DeliveryKind.IMAGE:
            if not rule.content:
                raise Permanent("the image rule has no image URL")
            return Reply(image_url=rule.content, source=source)
        if rule.kind is DeliveryKind.WEBHOOK:
            if not rule.content:
                raise Permanent("the webhook rule has no URL")
            try:
                text = await self._webhook.fetch(rule, order, unit=unit)
            except WebhookBlocked as exc:
                raise Permanent(exc.reason) from None
            except WebhookError as exc:
                raise NotSent(exc.reason) from None
            if not text.strip():
                raise NotSent("webhook answered nothing to deliver")
            return Reply(text=text, source=source)
        account = await self.store.get_account(order.account_id)
        return Reply(text=text_goods(rule, order, account_name=account.remark or account.id), source=source)

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
        if self.options.gives_up(delivery.attempts, permanent=permanent):
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
