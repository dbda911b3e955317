"""Accounts and their configuration: cookie, proxy, status, keyword rules, reply settings, AI settings.

Every write here bumps the account's `version` in the same transaction, so the engine can tell that what it
loaded is stale, and `expected_version` turns a write into compare-and-set. A cookie is validated by the
protocol's parser before anything is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..protocol import parse_cookie, seller_id
from ..replies.rules import MatchKind, ReplyKind, Rule
from ..replies.settings import AISettings, ReplySettings
from .base import UNREADABLE, StoreBase, check_account_id, mask_api_key
from .cluster import Fence, check_fence
from .errors import AccountNotFound, Conflict, DecryptionError, InvalidValue
from .models import AccountRow, AccountSettingsRow, AiSettingsRow, RuleRow, UserRow, utcnow
from .records import (
    UNSET,
    Account,
    AccountSecrets,
    AccountSettings,
    AiSettings,
    AiSettingsUpdate,
    Unset,
)

MAX_RULES = 5000
_BULK_CHUNK = 500  # ids per IN (...) list: well below every driver's bound-parameter limit


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    """Everything an account's replier is built from, read for many accounts at once (`get_reply_configs`)."""

    account_id: str
    version: int
    remark: str
    rules: list[Rule]
    settings: AccountSettings
    ai: AiSettings
    ai_api_key: str | None = field(repr=False)

    def reply_settings(self, *, message_expire_seconds: float) -> ReplySettings:
        """The settings the reply policy reads, from what the store holds: the one conversion between the two."""
        settings, ai = self.settings, self.ai
        return ReplySettings(
            default_reply=settings.default_reply,
            default_reply_once_per_chat=settings.default_reply_once_per_chat,
            pause_minutes=settings.pause_minutes,
            debounce_seconds=settings.debounce_seconds,
            message_expire_seconds=message_expire_seconds,
            account_name=self.remark or self.account_id,
            ai=AISettings(
                enabled=ai.enabled,
                base_url=ai.base_url,
                model=ai.model,
                api_key=self.ai_api_key or "",
                max_discount_percent=ai.max_discount_percent,
                max_discount_amount=ai.max_discount_amount,
                max_bargain_rounds=ai.max_bargain_rounds,
                prompt=ai.prompt,
            ),
        )


class AccountStore(StoreBase):
    """Accounts, rules and settings."""

    # -- accounts -----------------------------------------------------------------------------------------------

    async def create_account(
        self,
        account_id: str,
        cookie: str,
        *,
        owner: str | None = None,
        enabled: bool = True,
        remark: str = "",
        proxy: str | None = None,
        pause_minutes: float = 10.0,
        auto_confirm: bool = False,
        actor: str = "system",
    ) -> Account:
        """Add an account with default settings; `Conflict` when the id is taken, `InvalidCookie` when unusable."""
        check_account_id(account_id)
        seller = seller_id(parse_cookie(cookie))
        now = utcnow()
        async with self.db.transaction() as s:
            owner_id = await self._user_id(s, owner) if owner is not None else None
            if (await s.execute(select(AccountRow.id).where(AccountRow.id == account_id))).scalar() is not None:
                raise Conflict(f"account {account_id!r} already exists")
            s.add(
                AccountRow(
                    id=account_id,
                    owner_id=owner_id,
                    seller_id=seller,
                    cookie_encrypted=self.box.encrypt(cookie.strip()),
                    proxy_encrypted=self.box.encrypt(proxy) if proxy else None,
                    remark=remark,
                    enabled=enabled,
                    pause_minutes=pause_minutes,
                    auto_confirm=auto_confirm,
                    version=1,
                    created_at=now,
                    updated_at=now,
                )
            )
            s.add(AccountSettingsRow(account_id=account_id, updated_at=now))
            s.add(AiSettingsRow(account_id=account_id, updated_at=now))
            self._audit(s, "account.create", actor=actor, account_id=account_id, detail={"enabled": enabled})
            try:
                await s.flush()
            except IntegrityError as exc:  # a concurrent create of the same id on PostgreSQL
                raise Conflict(f"account {account_id!r} already exists") from exc
            return await self._load_account(s, account_id)

    async def get_account(self, account_id: str) -> Account:
        """One account, cookie masked; `AccountNotFound` when there is none."""
        async with self.db.read() as s:
            return await self._load_account(s, account_id)

    async def list_accounts(self, *, owner: str | None = None, enabled: bool | None = None) -> list[Account]:
        """Accounts in id order, optionally only one user's or only enabled/disabled ones."""
        statement = select(AccountRow, UserRow.username).outerjoin(UserRow, AccountRow.owner_id == UserRow.id)
        if owner is not None:
            statement = statement.where(UserRow.username == owner)
        if enabled is not None:
            statement = statement.where(AccountRow.enabled == enabled)
        async with self.db.read() as s:
            rows = (await s.execute(statement.order_by(AccountRow.id))).all()
        return [self._account(row, username) for row, username in rows]

    async def get_account_cookie(self, account_id: str) -> str:
        """The decrypted cookie string, for the session that logs in with it."""
        return (await self.get_account_secrets(account_id)).cookie

    async def get_account_secrets(self, account_id: str) -> AccountSecrets:
        """Decrypted cookie and proxy of one account, at its current version."""
        async with self.db.read() as s:
            row = await s.get(AccountRow, account_id)
            if row is None:
                raise AccountNotFound(account_id)
            return self._secrets(row)

    async def list_account_secrets(
        self, *, enabled: bool | None = True, account_ids: Collection[str] | None = None
    ) -> list[AccountSecrets]:
        """Decrypted cookies and proxies of many accounts at once (the engine's start), in id order.

        `account_ids` narrows it to some accounts (a worker taking over buckets loads only theirs).
        """
        statement = select(AccountRow).order_by(AccountRow.id)
        if enabled is not None:
            statement = statement.where(AccountRow.enabled == enabled)
        if account_ids is not None:
            statement = statement.where(AccountRow.id.in_(list(account_ids)))
        async with self.db.read() as s:
            return [self._secrets(row) for row in (await s.scalars(statement)).all()]

    async def update_cookie(
        self,
        account_id: str,
        cookie: str,
        *,
        expected_version: int | None = None,
        allow_other_seller: bool = False,
        actor: str = "system",
        fence: Fence | None = None,
    ) -> Account:
        """Replace the cookie atomically; refuses an unusable cookie, or another seller's, before writing.

        A session's refreshed cookie carries a `fence` (scale-out): refused with `FencedOut` once the bucket's
        lease moved on, so an old owner cannot overwrite what the new owner's session saved.
        """
        seller = seller_id(parse_cookie(cookie))
        async with self.db.transaction() as s:
            await check_fence(s, fence)
            version = await self._bump_version(s, account_id, expected_version)
            current = (await s.execute(select(AccountRow.seller_id).where(AccountRow.id == account_id))).scalar_one()
            if current != seller and not allow_other_seller:
                raise InvalidValue(
                    f"this cookie belongs to seller {seller}, but account {account_id!r} is seller {current}"
                )
            await s.execute(
                update(AccountRow)
                .where(AccountRow.id == account_id)
                .values(cookie_encrypted=self.box.encrypt(cookie.strip()), seller_id=seller)
            )
            self._audit(s, "account.cookie", actor=actor, account_id=account_id, detail={"version": version})
            return await self._load_account(s, account_id)

    async def set_enabled(
        self, account_id: str, enabled: bool, *, expected_version: int | None = None, actor: str = "system"
    ) -> Account:
        """Enable or disable an account."""
        async with self.db.transaction() as s:
            await self._bump_version(s, account_id, expected_version)
            await s.execute(update(AccountRow).where(AccountRow.id == account_id).values(enabled=enabled))
            self._audit(s, "account.enable" if enabled else "account.disable", actor=actor, account_id=account_id)
            return await self._load_account(s, account_id)

    async def update_account(
        self,
        account_id: str,
        *,
        remark: str | Unset = UNSET,
        proxy: str | Unset | None = UNSET,
        owner: str | Unset | None = UNSET,
        pause_minutes: float | Unset = UNSET,
        auto_confirm: bool | Unset = UNSET,
        expected_version: int | None = None,
        actor: str = "system",
    ) -> Account:
        """Change the given fields only; `proxy=None` removes the proxy, `owner=None` leaves it unowned."""
        values: dict[str, Any] = {}
        if not isinstance(remark, Unset):
            values["remark"] = remark
        if not isinstance(proxy, Unset):
            values["proxy_encrypted"] = self.box.encrypt(proxy) if proxy else None
        if not isinstance(pause_minutes, Unset):
            if pause_minutes < 0:
                raise InvalidValue("pause_minutes cannot be negative")
            values["pause_minutes"] = pause_minutes
        if not isinstance(auto_confirm, Unset):
            values["auto_confirm"] = auto_confirm
        async with self.db.transaction() as s:
            version = await self._bump_version(s, account_id, expected_version)
            if not isinstance(owner, Unset):
                values["owner_id"] = await self._user_id(s, owner) if owner is not None else None
            if values:
                await s.execute(update(AccountRow).where(AccountRow.id == account_id).values(**values))
            changed = sorted(name.removesuffix("_encrypted").removesuffix("_id") for name in values)
            self._audit(
                s, "account.update", actor=actor, account_id=account_id, detail={"fields": changed, "version": version}
            )
            return await self._load_account(s, account_id)

    async def delete_account(self, account_id: str, *, actor: str = "system") -> None:
        """Delete the account and everything that belongs to it (rules, settings, log, orders, stock)."""
        async with self.db.transaction() as s:
            result = await s.execute(delete(AccountRow).where(AccountRow.id == account_id))
            if result.rowcount == 0:  # type: ignore[attr-defined]  # DML gives a CursorResult
                raise AccountNotFound(account_id)
            self._audit(s, "account.delete", actor=actor, account_id=account_id)

    # -- rules --------------------------------------------------------------------------------------------------

    async def replace_rules(
        self,
        account_id: str,
        rules: Sequence[Rule],
        *,
        expected_version: int | None = None,
        actor: str = "system",
    ) -> list[Rule]:
        """Replace the account's rules with `rules`, in that order, atomically; ids are kept or generated."""
        if len(rules) > MAX_RULES:
            raise InvalidValue(f"at most {MAX_RULES} rules per account")
        given = [rule.id for rule in rules if rule.id is not None]
        if not all(0 < len(rule_id) <= 64 for rule_id in given):
            raise InvalidValue("a rule id has 1 to 64 characters")
        if len(given) != len(set(given)):
            raise InvalidValue("two rules have the same id")
        async with self.db.transaction() as s:
            version = await self._bump_version(s, account_id, expected_version)
            await s.execute(delete(RuleRow).where(RuleRow.account_id == account_id))
            if rules:
                await s.execute(
                    insert(RuleRow),
                    [
                        {
                            "account_id": account_id,
                            "rule_id": rule.id or uuid.uuid4().hex[:12],
                            "position": position,
                            "keyword": rule.keyword,
                            "reply": rule.reply,
                            "match": rule.match.value,
                            "item_id": rule.item_id,
                            "priority": rule.priority,
                            "kind": rule.kind.value,
                        }
                        for position, rule in enumerate(rules)
                    ],
                )
            self._audit(
                s, "rules.replace", actor=actor, account_id=account_id, detail={"count": len(rules), "version": version}
            )
            return await self._keyword_rules(s, account_id)

    async def get_rules(self, account_id: str) -> list[Rule]:
        """The account's rules in the seller's order."""
        async with self.db.read() as s:
            await self._require_account(s, account_id)
            return await self._keyword_rules(s, account_id)

    # -- settings -----------------------------------------------------------------------------------------------

    async def get_settings(self, account_id: str) -> AccountSettings:
        """Reply settings, with the account's pause_minutes and auto_confirm."""
        async with self.db.read() as s:
            return await self._settings(s, account_id)

    async def put_settings(
        self,
        account_id: str,
        settings: AccountSettings,
        *,
        ai: AiSettingsUpdate | None = None,
        expected_version: int | None = None,
        actor: str = "system",
    ) -> AccountSettings:
        """Save the reply settings (and the AI settings when given) in one transaction."""
        now = utcnow()
        async with self.db.transaction() as s:
            version = await self._bump_version(s, account_id, expected_version, now=now)
            await s.execute(
                update(AccountRow)
                .where(AccountRow.id == account_id)
                .values(pause_minutes=settings.pause_minutes, auto_confirm=settings.auto_confirm)
            )
            await s.execute(
                update(AccountSettingsRow)
                .where(AccountSettingsRow.account_id == account_id)
                .values(
                    default_reply=settings.default_reply,
                    default_reply_once_per_chat=settings.default_reply_once_per_chat,
                    debounce_seconds=settings.debounce_seconds,
                    updated_at=now,
                )
            )
            if ai is not None:
                await self._write_ai(s, account_id, ai, now=now)
            self._audit(
                s,
                "settings.update",
                actor=actor,
                account_id=account_id,
                detail={"ai": ai is not None, "version": version},
            )
            return await self._settings(s, account_id)

    async def get_ai_settings(self, account_id: str) -> AiSettings:
        """AI settings; the API key only as `has_api_key` and a masked tail."""
        async with self.db.read() as s:
            return await self._ai(s, account_id)

    async def put_ai_settings(
        self, account_id: str, ai: AiSettingsUpdate, *, expected_version: int | None = None, actor: str = "system"
    ) -> AiSettings:
        """Save the AI settings; the stored API key is kept unless `ai.api_key` is given."""
        now = utcnow()
        async with self.db.transaction() as s:
            version = await self._bump_version(s, account_id, expected_version, now=now)
            await self._write_ai(s, account_id, ai, now=now)
            self._audit(s, "ai.update", actor=actor, account_id=account_id, detail={"version": version})
            return await self._ai(s, account_id)

    async def get_ai_api_key(self, account_id: str) -> str | None:
        """The decrypted AI API key, for the AI client only."""
        async with self.db.read() as s:
            row = await s.get(AiSettingsRow, account_id)
            if row is None:
                raise AccountNotFound(account_id)
            return self._decrypt_or_none(row.api_key_encrypted)

    async def get_reply_configs(self, account_ids: Collection[str]) -> dict[str, ReplyConfig]:
        """Rules, reply settings and AI settings (with the decrypted key) of many accounts in one read snapshot.

        The engine's start: three queries per 500 accounts instead of five read transactions per account, which
        saturated the loop and the pool at thousands of accounts. Unknown ids are simply absent.
        """
        ids = list(dict.fromkeys(account_ids))
        found: dict[str, ReplyConfig] = {}
        async with self.db.read() as s:
            for start in range(0, len(ids), _BULK_CHUNK):
                chunk = ids[start : start + _BULK_CHUNK]
                rules: dict[str, list[Rule]] = {}
                for rule_row in await s.scalars(
                    select(RuleRow).where(RuleRow.account_id.in_(chunk)).order_by(RuleRow.account_id, RuleRow.position)
                ):
                    rules.setdefault(rule_row.account_id, []).append(_rule(rule_row))
                ai_rows = {
                    row.account_id: row
                    for row in await s.scalars(select(AiSettingsRow).where(AiSettingsRow.account_id.in_(chunk)))
                }
                settings = await s.execute(
                    select(AccountSettingsRow, AccountRow)
                    .join(AccountRow, AccountRow.id == AccountSettingsRow.account_id)
                    .where(AccountSettingsRow.account_id.in_(chunk))
                )
                for settings_row, account in settings:
                    ai = ai_rows.get(settings_row.account_id)
                    if ai is None:
                        continue
                    found[settings_row.account_id] = ReplyConfig(
                        account_id=settings_row.account_id,
                        version=account.version,
                        remark=account.remark,
                        rules=rules.get(settings_row.account_id, []),
                        settings=_account_settings(settings_row, account.pause_minutes, account.auto_confirm),
                        ai=self._ai_record(ai),
                        ai_api_key=self._decrypt_or_none(ai.api_key_encrypted),
                    )
        return found

    # -- rows to records ----------------------------------------------------------------------------------------

    async def _load_account(self, s: AsyncSession, account_id: str) -> Account:
        statement = (
            select(AccountRow, UserRow.username)
            .outerjoin(UserRow, AccountRow.owner_id == UserRow.id)
            .where(AccountRow.id == account_id)
            .execution_options(populate_existing=True)
        )
        found = (await s.execute(statement)).first()
        if found is None:
            raise AccountNotFound(account_id)
        return self._account(found[0], found[1])

    def _account(self, row: AccountRow, owner: str | None) -> Account:
        return Account(
            id=row.id,
            owner=owner,
            seller_id=row.seller_id,
            cookie_masked=self._masked_cookie(row.cookie_encrypted),
            proxy_masked=self._masked_proxy(row.proxy_encrypted),
            remark=row.remark,
            enabled=row.enabled,
            pause_minutes=row.pause_minutes,
            auto_confirm=row.auto_confirm,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def _secrets(self, row: AccountRow) -> AccountSecrets:
        return AccountSecrets(
            id=row.id,
            version=row.version,
            enabled=row.enabled,
            cookie=self.box.decrypt(row.cookie_encrypted),
            proxy=self._decrypt_or_none(row.proxy_encrypted),
        )

    async def _keyword_rules(self, s: AsyncSession, account_id: str) -> list[Rule]:
        rows = await s.scalars(select(RuleRow).where(RuleRow.account_id == account_id).order_by(RuleRow.position))
        return [_rule(row) for row in rows]

    async def _settings(self, s: AsyncSession, account_id: str) -> AccountSettings:
        found = (
            await s.execute(
                select(AccountSettingsRow, AccountRow.pause_minutes, AccountRow.auto_confirm)
                .join(AccountRow, AccountRow.id == AccountSettingsRow.account_id)
                .where(AccountSettingsRow.account_id == account_id)
                .execution_options(populate_existing=True)
            )
        ).first()
        if found is None:
            raise AccountNotFound(account_id)
        row, pause_minutes, auto_confirm = found
        return _account_settings(row, pause_minutes, auto_confirm)

    async def _ai(self, s: AsyncSession, account_id: str) -> AiSettings:
        row = await s.get(AiSettingsRow, account_id, populate_existing=True)
        if row is None:
            raise AccountNotFound(account_id)
        return self._ai_record(row)

    def _ai_record(self, row: AiSettingsRow) -> AiSettings:
        try:
            masked = mask_api_key(self.box.decrypt(row.api_key_encrypted)) if row.api_key_encrypted else None
        except DecryptionError:
            masked = UNREADABLE
        return AiSettings(
            enabled=row.enabled,
            base_url=row.base_url,
            model=row.model,
            max_discount_percent=row.max_discount_percent,
            max_discount_amount=row.max_discount_amount,
            max_bargain_rounds=row.max_bargain_rounds,
            prompt=row.prompt,
            has_api_key=row.api_key_encrypted is not None,
            api_key_masked=masked,
        )

    async def _write_ai(self, s: AsyncSession, account_id: str, ai: AiSettingsUpdate, *, now: Any) -> None:
        values: dict[str, Any] = {
            "enabled": ai.enabled,
            "base_url": ai.base_url,
            "model": ai.model,
            "max_discount_percent": ai.max_discount_percent,
            "max_discount_amount": ai.max_discount_amount,
            "max_bargain_rounds": ai.max_bargain_rounds,
            "prompt": ai.prompt,
            "updated_at": now,
        }
        if not isinstance(ai.api_key, Unset):
            values["api_key_encrypted"] = self.box.encrypt(ai.api_key) if ai.api_key else None
        await s.execute(update(AiSettingsRow).where(AiSettingsRow.account_id == account_id).values(**values))


def _rule(row: RuleRow) -> Rule:
    return Rule(
        row.keyword,
        row.reply,
        match=MatchKind(row.match),
        item_id=row.item_id,
        priority=row.priority,
        kind=ReplyKind(row.kind),
        id=row.rule_id,
    )


def _account_settings(row: AccountSettingsRow, pause_minutes: float, auto_confirm: bool) -> AccountSettings:
    return AccountSettings(
        default_reply=row.default_reply,
        default_reply_once_per_chat=row.default_reply_once_per_chat,
        debounce_seconds=row.debounce_seconds,
        pause_minutes=pause_minutes,
        auto_confirm=auto_confirm,
    )
