"""Delivery rules and the stock of batch rules: unique lines, each given to exactly one unit of one order.

A line moves available -> reserved (for an order's unit) -> delivered, back to available when the send failed
(`release_line`), and on refund to available or returned as its rule says. `reserve_line` is one UPDATE whose
subquery picks the oldest available line: on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so concurrent
transactions each get a different line without waiting on each other; on SQLite the single writer does the same.
It is idempotent per (rule, order, unit): a retry after a crash gets the line it already reserved.
Lines are secrets (card codes): encrypted at rest, decrypted only by `reserve_line` and `reveal=True`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .base import StoreBase
from .errors import InvalidTransition, InvalidValue, NotFound
from .models import DeliveryRuleRow, StockLineRow, table_of, utcnow
from .records import DeliveryKind, DeliveryRule, DeliveryRuleSpec, ReservedLine, StockCount, StockState

MAX_LINES_PER_CALL = 100_000


class StockStore(StoreBase):
    """Delivery rules and stock lines."""

    async def replace_delivery_rules(
        self,
        account_id: str,
        rules: Sequence[DeliveryRuleSpec],
        *,
        expected_version: int | None = None,
        actor: str = "system",
    ) -> list[DeliveryRule]:
        """Make the account's delivery rules exactly `rules`, atomically.

        A spec with an `id` updates that rule and keeps its stock (its content too when `content` is None);
        rules left out are deleted with their stock; `lines` replaces a rule's available lines.
        """
        given = [spec.id for spec in rules if spec.id is not None]
        if len(given) != len(set(given)):
            raise InvalidValue("two delivery rules have the same id")
        now = utcnow()
        async with self.db.transaction() as s:
            version = await self._bump_version(s, account_id, expected_version, now=now)
            existing = set(
                (await s.scalars(select(DeliveryRuleRow.id).where(DeliveryRuleRow.account_id == account_id))).all()
            )
            unknown = set(given) - existing
            if unknown:
                raise NotFound(f"delivery rule(s) {sorted(unknown)} do not belong to account {account_id!r}")
            dropped = existing - set(given)
            if dropped:
                await s.execute(delete(DeliveryRuleRow).where(DeliveryRuleRow.id.in_(dropped)))
            for position, spec in enumerate(rules):
                values: dict[str, Any] = {
                    "position": position,
                    "kind": str(spec.kind),
                    "item_id": spec.item_id,
                    "title_keyword": spec.title_keyword,
                    "delay_seconds": spec.delay_seconds,
                    "reusable_on_refund": spec.reusable_on_refund,
                    "low_stock_threshold": spec.low_stock_threshold,
                    "enabled": spec.enabled,
                    "updated_at": now,
                }
                if spec.content is not None or spec.id is None:
                    values["content_encrypted"] = self.box.encrypt(spec.content) if spec.content else None
                if spec.id is None:
                    row = DeliveryRuleRow(account_id=account_id, created_at=now, **values)
                    s.add(row)
                    await s.flush()
                    rule_id = row.id
                else:
                    rule_id = spec.id
                    await s.execute(update(DeliveryRuleRow).where(DeliveryRuleRow.id == rule_id).values(**values))
                if spec.lines is not None:
                    await s.execute(
                        delete(StockLineRow).where(
                            StockLineRow.rule_id == rule_id, StockLineRow.state == StockState.AVAILABLE.value
                        )
                    )
                    await self._add_lines(s, rule_id, spec.lines)
            self._audit(
                s,
                "delivery_rules.replace",
                actor=actor,
                account_id=account_id,
                detail={"count": len(rules), "deleted": len(dropped), "version": version},
            )
            return await self._delivery_rules(s, account_id=account_id, reveal=False)

    async def list_delivery_rules(self, account_id: str, *, reveal: bool = False) -> list[DeliveryRule]:
        """The account's delivery rules in order, with stock counts; `reveal` decrypts contents and lines."""
        async with self.db.read() as s:
            await self._require_account(s, account_id)
            return await self._delivery_rules(s, account_id=account_id, reveal=reveal)

    async def get_delivery_rule(self, rule_id: int, *, reveal: bool = False) -> DeliveryRule:
        """One delivery rule; `reveal` decrypts its content and available lines (for the delivery itself)."""
        async with self.db.read() as s:
            rules = await self._delivery_rules(s, rule_id=rule_id, reveal=reveal)
        if not rules:
            raise NotFound(f"delivery rule {rule_id} does not exist")
        return rules[0]

    async def add_stock_lines(self, rule_id: int, lines: Sequence[str]) -> StockCount:
        """Append lines to a batch rule's stock; returns the new counts."""
        async with self.db.transaction() as s:
            kind = (await s.execute(select(DeliveryRuleRow.kind).where(DeliveryRuleRow.id == rule_id))).scalar()
            if kind is None:
                raise NotFound(f"delivery rule {rule_id} does not exist")
            if kind != DeliveryKind.BATCH.value:
                raise InvalidValue("only a batch rule has stock lines")
            await self._add_lines(s, rule_id, [line for line in lines if line.strip()])
            return (await self._stock_counts(s, [rule_id]))[rule_id]

    async def stock_counts(self, rule_id: int) -> StockCount:
        """How many lines of the rule are in each state."""
        async with self.db.read() as s:
            return (await self._stock_counts(s, [rule_id]))[rule_id]

    async def reserve_line(self, rule_id: int, order_id: str, *, unit: int = 1) -> ReservedLine | None:
        """Reserve the oldest available line for one unit of an order; None when the stock is empty.

        Two concurrent calls never get the same line; calling again for the same (rule, order, unit) returns
        the line already reserved or delivered for it.
        """
        if not order_id or unit < 1:
            raise InvalidValue("a reservation needs an order id and a unit numbered from 1")
        table = table_of(StockLineRow)
        pick = (
            select(table.c.id)
            .where(table.c.rule_id == rule_id, table.c.state == StockState.AVAILABLE.value)
            .order_by(table.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        reserve = (
            update(table)
            .where(table.c.id == pick, table.c.state == StockState.AVAILABLE.value)
            .values(state=StockState.RESERVED.value, order_id=order_id, unit=unit, reserved_at=utcnow())
            .returning(table.c.id, table.c.line_encrypted, table.c.state)
        )
        async with self.db.transaction() as s:
            held = await self._held_line(s, rule_id, order_id, unit)
            if held is not None:
                return held
            try:
                async with s.begin_nested():
                    row = (await s.execute(reserve)).first()
            except IntegrityError:
                # Another transaction reserved a line for this very unit first: that one is the unit's line.
                return await self._held_line(s, rule_id, order_id, unit)
            if row is None:
                return None
            return ReservedLine(
                id=row.id,
                rule_id=rule_id,
                order_id=order_id,
                unit=unit,
                state=StockState(row.state),
                content=self.box.decrypt(row.line_encrypted),
            )

    async def commit_line(self, line_id: int) -> None:
        """Mark a reserved line delivered (idempotent)."""
        await self._move(
            line_id,
            allowed={StockState.RESERVED},
            done=StockState.DELIVERED,
            values={"state": StockState.DELIVERED.value, "delivered_at": utcnow()},
        )

    async def release_line(self, line_id: int) -> None:
        """Put a reserved line back in stock after a failed send (idempotent)."""
        await self._move(
            line_id,
            allowed={StockState.RESERVED},
            done=StockState.AVAILABLE,
            values={"state": StockState.AVAILABLE.value, "order_id": None, "unit": None, "reserved_at": None},
        )

    async def return_line(self, line_id: int) -> StockState:
        """After a refund: the delivered line goes back to stock if its rule allows reuse, else to `returned`."""
        async with self.db.transaction() as s:
            found = (
                await s.execute(
                    select(StockLineRow.state, DeliveryRuleRow.reusable_on_refund)
                    .join(DeliveryRuleRow, DeliveryRuleRow.id == StockLineRow.rule_id)
                    .where(StockLineRow.id == line_id)
                    .with_for_update(of=StockLineRow)
                )
            ).first()
            if found is None:
                raise NotFound(f"stock line {line_id} does not exist")
            state, reusable = found
            if state != StockState.DELIVERED.value:
                raise InvalidTransition(f"stock line {line_id} is {state}, not delivered")
            now = utcnow()
            # Returned lines keep their order id (who had it) but free their unit for the unique constraint.
            values: dict[str, Any] = (
                {"state": StockState.AVAILABLE.value, "order_id": None, "unit": None, "reserved_at": None}
                if reusable
                else {"state": StockState.RETURNED.value, "unit": None}
            )
            await s.execute(update(StockLineRow).where(StockLineRow.id == line_id).values(returned_at=now, **values))
            return StockState(values["state"])

    async def _move(self, line_id: int, *, allowed: set[StockState], done: StockState, values: dict[str, Any]) -> None:
        async with self.db.transaction() as s:
            result = await s.execute(
                update(StockLineRow)
                .where(StockLineRow.id == line_id, StockLineRow.state.in_([state.value for state in allowed]))
                .values(**values)
            )
            if result.rowcount:  # type: ignore[attr-defined]  # DML gives a CursorResult
                return
            state = (await s.execute(select(StockLineRow.state).where(StockLineRow.id == line_id))).scalar()
            if state is None:
                raise NotFound(f"stock line {line_id} does not exist")
            if state != done.value:
                raise InvalidTransition(f"stock line {line_id} is {state}, cannot become {done.value}")

    async def _held_line(self, s: AsyncSession, rule_id: int, order_id: str, unit: int) -> ReservedLine | None:
        row = (
            await s.scalars(
                select(StockLineRow).where(
                    StockLineRow.rule_id == rule_id, StockLineRow.order_id == order_id, StockLineRow.unit == unit
                )
            )
        ).first()
        if row is None:
            return None
        return ReservedLine(
            id=row.id,
            rule_id=rule_id,
            order_id=order_id,
            unit=unit,
            state=StockState(row.state),
            content=self.box.decrypt(row.line_encrypted),
        )

    async def _add_lines(self, s: AsyncSession, rule_id: int, lines: Sequence[str]) -> None:
        if len(lines) > MAX_LINES_PER_CALL:
            raise InvalidValue(f"at most {MAX_LINES_PER_CALL} lines at once")
        if lines:
            now = utcnow()
            await s.execute(
                insert(StockLineRow),
                [
                    {
                        "rule_id": rule_id,
                        "line_encrypted": self.box.encrypt(line.strip()),
                        "state": StockState.AVAILABLE.value,
                        "created_at": now,
                    }
                    for line in lines
                ],
            )

    async def _stock_counts(self, s: AsyncSession, rule_ids: Sequence[int]) -> dict[int, StockCount]:
        tallies: dict[int, dict[str, int]] = {rule_id: {} for rule_id in rule_ids}
        rows = await s.execute(
            select(StockLineRow.rule_id, StockLineRow.state, func.count())
            .where(StockLineRow.rule_id.in_(rule_ids))
            .group_by(StockLineRow.rule_id, StockLineRow.state)
        )
        for rule_id, state, count in rows:
            tallies[rule_id][state] = count
        return {rule_id: StockCount(**tally) for rule_id, tally in tallies.items()}

    async def _delivery_rules(
        self, s: AsyncSession, *, account_id: str | None = None, rule_id: int | None = None, reveal: bool
    ) -> list[DeliveryRule]:
        statement = select(DeliveryRuleRow).execution_options(populate_existing=True)
        if account_id is not None:
            statement = statement.where(DeliveryRuleRow.account_id == account_id)
        if rule_id is not None:
            statement = statement.where(DeliveryRuleRow.id == rule_id)
        rows = (await s.scalars(statement.order_by(DeliveryRuleRow.position))).all()
        counts = await self._stock_counts(s, [row.id for row in rows])
        lines: dict[int, list[str]] = {row.id: [] for row in rows}
        if reveal and rows:
            for line_rule, token in await s.execute(
                select(StockLineRow.rule_id, StockLineRow.line_encrypted)
                .where(StockLineRow.rule_id.in_(lines), StockLineRow.state == StockState.AVAILABLE.value)
                .order_by(StockLineRow.id)
            ):
                lines[line_rule].append(self.box.decrypt(token))
        return [
            DeliveryRule(
                id=row.id,
                account_id=row.account_id,
                position=row.position,
                kind=DeliveryKind(row.kind),
                item_id=row.item_id,
                title_keyword=row.title_keyword,
                delay_seconds=row.delay_seconds,
                reusable_on_refund=row.reusable_on_refund,
                low_stock_threshold=row.low_stock_threshold,
                enabled=row.enabled,
                has_content=row.content_encrypted is not None,
                stock=counts[row.id],
                content=self._decrypt_or_none(row.content_encrypted) if reveal else None,
                lines=tuple(lines[row.id]) if reveal and row.kind == DeliveryKind.BATCH.value else None,
            )
            for row in rows
        ]
