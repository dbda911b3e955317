"""Orders with their history, and deliveries: the exactly-once guard of auto-delivery.

`claim_delivery` inserts (account, order, unit) under a unique constraint: whoever inserts first delivers that
unit, and a re-sent "paid" event, a reconnect, a restart or a second worker finds the row and does nothing.
A delivery that fails stays in the table as `failed` with `next_attempt_at` (retried) or `delivery_failed`
(given up, with the reason), so nothing is ever dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .base import StoreBase, check_limit
from .cluster import Fence, check_fence
from .errors import AccountNotFound, InvalidValue, NotFound
from .models import DeliveryRow, OrderEventRow, OrderRow, table_of, utcnow
from .records import UNSET, Delivery, DeliveryState, Order, OrderChange, OrderEvent, Unset, coerce

_DELIVERY_KEY = ["account_id", "order_id", "unit"]


class OrderStore(StoreBase):
    """Orders, their events and their deliveries."""

    async def record_order(
        self,
        account_id: str,
        order_id: str,
        *,
        status: str,
        buyer_id: str | None = None,
        buyer_nick: str | None = None,
        item_id: str | None = None,
        item_title: str | None = None,
        chat_id: str | None = None,
        quantity: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> OrderChange:
        """Create or update an order from a platform event; a status change is appended to its history.

        Fields given as None keep what is stored. The order row is locked (PostgreSQL) while it changes, so two
        events of one order are applied one after the other.
        """
        if not order_id:
            raise InvalidValue("an order needs its platform order id")
        if quantity is not None and quantity < 1:
            raise InvalidValue("quantity must be at least 1")
        now = utcnow()
        fields = {
            "buyer_id": buyer_id,
            "buyer_nick": buyer_nick,
            "item_id": item_id,
            "item_title": item_title,
            "chat_id": chat_id,
            "quantity": quantity,
        }
        known = {name: value for name, value in fields.items() if value is not None}
        new_row = (
            self._insert(table_of(OrderRow))
            .values(
                {
                    "quantity": 1,
                    **known,
                    "account_id": account_id,
                    "order_id": order_id,
                    "status": status,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            .on_conflict_do_nothing(index_elements=["account_id", "order_id"])
            .returning(table_of(OrderRow).c.id)
        )
        async with self.db.transaction() as s:
            try:
                created = (await s.execute(new_row)).scalar()
            except IntegrityError as exc:
                raise AccountNotFound(account_id) from exc
            row = (
                await s.scalars(
                    select(OrderRow)
                    .where(OrderRow.account_id == account_id, OrderRow.order_id == order_id)
                    .with_for_update()
                )
            ).one()
            previous = None if created is not None else row.status
            if previous is not None:
                await s.execute(
                    update(OrderRow).where(OrderRow.id == row.id).values(status=status, updated_at=now, **known)
                )
            if previous != status:
                s.add(OrderEventRow(order_pk=row.id, at=now, status=status, detail=dict(detail or {})))
            await s.flush()
            order = (await self._orders(s, [row.id]))[0]
            return OrderChange(order=order, previous_status=previous)

    async def get_order(self, account_id: str, order_id: str) -> Order:
        """One order with its history and deliveries."""
        async with self.db.read() as s:
            pk = (
                await s.execute(
                    select(OrderRow.id).where(OrderRow.account_id == account_id, OrderRow.order_id == order_id)
                )
            ).scalar()
            if pk is None:
                raise NotFound(f"account {account_id!r} has no order {order_id!r}")
            return (await self._orders(s, [pk]))[0]

    async def list_orders(self, account_id: str, *, status: str | None = None, limit: int = 100) -> list[Order]:
        """The account's latest orders, newest first, with history and deliveries."""
        statement = select(OrderRow.id).where(OrderRow.account_id == account_id)
        if status is not None:
            statement = statement.where(OrderRow.status == status)
        async with self.db.read() as s:
            pks = (await s.scalars(statement.order_by(OrderRow.id.desc()).limit(check_limit(limit)))).all()
            return await self._orders(s, pks)

    # -- deliveries ---------------------------------------------------------------------------------------------

    async def claim_delivery(
        self, account_id: str, order_id: str, unit: int = 1, *, rule_id: int | None = None, fence: Fence | None = None
    ) -> bool:
        """Claim one unit of an order for delivery; True exactly once per (account, order, unit).

        With a `fence` (scale-out) the claim is refused with `FencedOut` once the bucket's lease moved on.
        """
        if unit < 1:
            raise InvalidValue("units are numbered from 1")
        now = utcnow()
        statement = (
            self._insert(table_of(DeliveryRow))
            .values(
                account_id=account_id,
                order_id=order_id,
                unit=unit,
                state=DeliveryState.PENDING.value,
                rule_id=rule_id,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=_DELIVERY_KEY)
            .returning(table_of(DeliveryRow).c.id)
        )
        async with self.db.transaction() as s:
            await check_fence(s, fence)
            try:
                return (await s.execute(statement)).scalar() is not None
            except IntegrityError as exc:  # the account (or the rule) does not exist
                if rule_id is None:
                    raise AccountNotFound(account_id) from exc
                raise NotFound(f"account {account_id!r} or delivery rule {rule_id} does not exist") from exc

    async def update_delivery(
        self,
        account_id: str,
        order_id: str,
        unit: int = 1,
        *,
        state: DeliveryState | str,
        error: str | None = None,
        rule_id: int | Unset | None = UNSET,
        stock_line_id: int | Unset | None = UNSET,
        next_attempt_at: datetime | None = None,
        count_attempt: bool = True,
    ) -> Delivery:
        """Record the outcome of a delivery attempt (sent, failed with a retry time, or given up)."""
        values: dict[str, Any] = {
            "state": coerce(DeliveryState, state, "state").value,
            "error": error,
            "next_attempt_at": next_attempt_at,
            "updated_at": utcnow(),
        }
        if count_attempt:
            values["attempts"] = DeliveryRow.attempts + 1
        if not isinstance(rule_id, Unset):
            values["rule_id"] = rule_id
        if not isinstance(stock_line_id, Unset):
            values["stock_line_id"] = stock_line_id
        key = (DeliveryRow.account_id == account_id, DeliveryRow.order_id == order_id, DeliveryRow.unit == unit)
        async with self.db.transaction() as s:
            result = await s.execute(update(DeliveryRow).where(*key).values(**values))
            if not result.rowcount:  # type: ignore[attr-defined]  # DML gives a CursorResult
                raise NotFound(f"no delivery claimed for unit {unit} of order {order_id!r} of account {account_id!r}")
            row = (await s.scalars(select(DeliveryRow).where(*key).execution_options(populate_existing=True))).one()
            return _delivery(row)

    async def transition_delivery(
        self,
        account_id: str,
        order_id: str,
        unit: int = 1,
        *,
        from_state: DeliveryState | str,
        from_attempts: int,
        state: DeliveryState | str,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
        count_attempt: bool = False,
    ) -> Delivery | None:
        """Move a delivery on only if it is still in (`from_state`, `from_attempts`); None when someone else did.

        A compare-and-set: of two workers that both saw a unit due (a restart sweep beside a live task, two
        engines), exactly one wins the next attempt, so a unit is never sent by both.
        """
        expected = coerce(DeliveryState, from_state, "from_state").value
        values: dict[str, Any] = {
            "state": coerce(DeliveryState, state, "state").value,
            "error": error,
            "next_attempt_at": next_attempt_at,
            "updated_at": utcnow(),
        }
        if count_attempt:
            values["attempts"] = DeliveryRow.attempts + 1
        key = (DeliveryRow.account_id == account_id, DeliveryRow.order_id == order_id, DeliveryRow.unit == unit)
        async with self.db.transaction() as s:
            result = await s.execute(
                update(DeliveryRow)
                .where(*key, DeliveryRow.state == expected, DeliveryRow.attempts == from_attempts)
                .values(**values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]  # DML gives a CursorResult
                return None
            row = (await s.scalars(select(DeliveryRow).where(*key).execution_options(populate_existing=True))).one()
            return _delivery(row)

    async def get_deliveries(self, account_id: str, order_id: str) -> list[Delivery]:
        """Every claimed unit of one order."""
        async with self.db.read() as s:
            rows = await s.scalars(
                select(DeliveryRow)
                .where(DeliveryRow.account_id == account_id, DeliveryRow.order_id == order_id)
                .order_by(DeliveryRow.unit)
            )
            return [_delivery(row) for row in rows]

    async def list_due_deliveries(
        self, *, now: datetime | None = None, account_ids: Iterable[str] | None = None, limit: int = 100
    ) -> list[Delivery]:
        """Deliveries to (re)try now: pending or sending ones (to look at), and failed ones whose time has come."""
        now = now or utcnow()
        statement = select(DeliveryRow).where(
            or_(
                DeliveryRow.state.in_([DeliveryState.PENDING.value, DeliveryState.SENDING.value]),
                (DeliveryRow.state == DeliveryState.FAILED.value)
                & (DeliveryRow.next_attempt_at.is_(None) | (DeliveryRow.next_attempt_at <= now)),
            )
        )
        if account_ids is not None:
            statement = statement.where(DeliveryRow.account_id.in_(list(account_ids)))
        async with self.db.read() as s:
            rows = await s.scalars(statement.order_by(DeliveryRow.id).limit(check_limit(limit)))
            return [_delivery(row) for row in rows]

    async def _orders(self, s: AsyncSession, pks: Sequence[int]) -> list[Order]:
        if not pks:
            return []
        statement = select(OrderRow).where(OrderRow.id.in_(pks)).execution_options(populate_existing=True)
        rows = {row.id: row for row in await s.scalars(statement)}
        events: dict[int, list[OrderEvent]] = {pk: [] for pk in pks}
        for event in await s.scalars(
            select(OrderEventRow).where(OrderEventRow.order_pk.in_(pks)).order_by(OrderEventRow.id)
        ):
            events[event.order_pk].append(OrderEvent(at=event.at, status=event.status, detail=event.detail))
        deliveries: dict[tuple[str, str], list[Delivery]] = {}
        accounts = {row.account_id for row in rows.values()}
        order_ids = [row.order_id for row in rows.values()]
        for delivery in await s.scalars(
            select(DeliveryRow)
            .where(DeliveryRow.account_id.in_(accounts), DeliveryRow.order_id.in_(order_ids))
            .order_by(DeliveryRow.unit)
        ):
            deliveries.setdefault((delivery.account_id, delivery.order_id), []).append(_delivery(delivery))
        return [
            _order(rows[pk], tuple(events[pk]), tuple(deliveries.get((rows[pk].account_id, rows[pk].order_id), ())))
            for pk in pks
            if pk in rows
        ]


def _order(row: OrderRow, history: tuple[OrderEvent, ...], deliveries: tuple[Delivery, ...]) -> Order:
    return Order(
        account_id=row.account_id,
        order_id=row.order_id,
        status=row.status,
        buyer_id=row.buyer_id,
        buyer_nick=row.buyer_nick,
        item_id=row.item_id,
        item_title=row.item_title,
        chat_id=row.chat_id,
        quantity=row.quantity,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=history,
        deliveries=deliveries,
    )


def _delivery(row: DeliveryRow) -> Delivery:
    return Delivery(
        account_id=row.account_id,
        order_id=row.order_id,
        unit=row.unit,
        state=DeliveryState(row.state),
        rule_id=row.rule_id,
        stock_line_id=row.stock_line_id,
        attempts=row.attempts,
        error=row.error,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
