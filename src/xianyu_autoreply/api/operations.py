"""The API's one way to change accounts: through the engine when this process runs one, else the store.

With an engine every write goes through `AccountScheduler` (account lock, database first, then memory and the
running session), so memory and database never disagree. Under `serve --no-engine` the same calls write the
database only; the engine that owns the account (a `worker`) applies them when it reloads.
An account created behind the engine's back (the `accounts` CLI) is loaded into it before the first write.
Every URL an owner chooses (proxy, AI base URL, webhook rule, notification URL) passes the outbound policy
(outbound.py) before anything is written: a refusal is a 422 naming the field and the reason, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from fastapi import Request

from ..engine.cluster import owner_of_account, send_command, wait_command
from ..engine.scheduler import AccountScheduler
from ..outbound import OutboundGuard, OutboundRefused, Purpose
from ..platform.session import Sent
from ..protocol import parse_cookie
from ..replies import TryResult
from ..store import (
    Account,
    AccountNotFound,
    AccountSettings,
    AiSettingsUpdate,
    DeliveryKind,
    DeliveryRule,
    DeliveryRuleSpec,
    Direction,
    Role,
    Rule,
    Store,
    User,
)
from .errors import ApiError, not_found
from .schemas import AccountState

T = TypeVar("T")
COMMAND_WAIT = 10.0  # seconds an API node waits for the owning worker to apply a change
log = structlog.get_logger("xianyu_autoreply.api")

UNKNOWN_STATE = AccountState(
    lifecycle="unknown",
    connection="unknown",
    since=None,
    last_error=None,
    reconnects=0,
    messages_in=0,
    replies_out=0,
)


def may_see(user: User, account: Account) -> bool:
    """An admin sees every account, a user only their own."""
    return user.role is Role.ADMIN or account.owner == user.username


class AccountOperations:
    """Reads with ownership checks, and writes that keep engine and database in step."""

    def __init__(self, store: Store, engine: AccountScheduler | None, *, outbound: OutboundGuard | None = None) -> None:
        """`outbound`: the administrator's policy for owners' URLs (public addresses only when not given)."""
        self.store = store
        self.engine = engine
        self.outbound = outbound or OutboundGuard()

    # --- the outbound policy at save time ---------------------------------------------------------------------

    async def check_url(self, url: str, *, purpose: Purpose, field: str) -> None:
        """Refuse (422 `url_not_allowed`, naming `field` and why) a URL the outbound policy refuses.

        A host that does not resolve now is accepted: DNS may be down, and the fetch checks it again.
        """
        try:
            await self.outbound.check(url, purpose=purpose)
        except OutboundRefused as exc:
            raise ApiError(422, "url_not_allowed", f"{field}: {exc.reason}", field=field) from None
        except OSError:
            log.info("saved a URL whose host does not resolve now", field=field)

    async def check_notification_urls(self, urls: Sequence[str]) -> None:
        """Every apprise URL of a user's notification settings, before they are saved (field `urls.<n>`)."""
        for position, url in enumerate(urls):
            await self.check_url(url, purpose=Purpose.NOTIFICATION, field=f"urls.{position}")

    async def _check_delivery_rules(self, account_id: str, rules: Sequence[DeliveryRuleSpec]) -> None:
        """A webhook rule's URL (`<n>.content`): the one given, or the stored one it keeps."""
        stored: dict[int, str | None] | None = None
        for position, rule in enumerate(rules):
            if rule.kind is not DeliveryKind.WEBHOOK:
                continue
            url = rule.content
            if url is None and rule.id is not None:
                if stored is None:  # only this account's rules: another's URL must not show in a refusal
                    stored = {r.id: r.content for r in await self.store.list_delivery_rules(account_id, reveal=True)}
                url = stored.get(rule.id)
            if url:
                await self.check_url(url, purpose=Purpose.WEBHOOK, field=f"{position}.content")

    # --- reading ----------------------------------------------------------------------------------------------

    async def visible(self, user: User, account_id: str) -> Account:
        """The account if `user` may see it; the same 404 when it is missing or someone else's."""
        try:
            account = await self.store.get_account(account_id)
        except AccountNotFound:
            raise not_found() from None
        if not may_see(user, account):
            raise not_found()
        return account

    async def list_visible(self, user: User) -> list[Account]:
        owner = None if user.role is Role.ADMIN else user.username
        return await self.store.list_accounts(owner=owner)

    def state(self, account_id: str) -> AccountState:
        """Live state from the engine (`stopped` for an account it has not loaded; `unknown` without engine)."""
        if self.engine is None:
            return UNKNOWN_STATE
        try:
            s = self.engine.state(account_id)
        except AccountNotFound:
            return UNKNOWN_STATE.model_copy(update={"lifecycle": "stopped", "connection": "disconnected"})
        return AccountState(
            lifecycle=s.lifecycle.value,
            connection=s.connection,
            since=datetime.fromtimestamp(s.since_ms / 1000, UTC),
            last_error=s.last_error,
            reconnects=s.reconnects,
            messages_in=s.messages_in,
            replies_out=s.replies_out,
        )

    # --- writing ----------------------------------------------------------------------------------------------

    async def _loaded(self, account_id: str) -> AccountScheduler | None:
        engine = self.engine
        if engine is not None and account_id not in engine.account_ids():
            await engine.reload(account_id)
        return engine

    async def add(
        self,
        account_id: str,
        cookie: str,
        *,
        owner: str | None,
        enabled: bool,
        remark: str,
        proxy: str | None,
        actor: str,
    ) -> Account:
        parse_cookie(cookie)
        if proxy:
            await self.check_url(proxy, purpose=Purpose.PROXY, field="proxy")
        if self.engine is not None:
            return await self.engine.add(
                account_id, cookie, owner=owner, enabled=enabled, remark=remark, proxy=proxy, actor=actor
            )
        account = await self.store.create_account(
            account_id, cookie, owner=owner, enabled=enabled, remark=remark, proxy=proxy, actor=actor
        )
        await self._tell_worker(account_id)
        return account

    async def remove(self, account_id: str, *, actor: str) -> None:
        engine = await self._loaded(account_id)
        if engine is not None:
            await engine.remove(account_id, actor=actor)
        else:
            await self.store.delete_account(account_id, actor=actor)
            await self._tell_worker(account_id)

    async def update_cookie(self, account_id: str, cookie: str, *, actor: str) -> Account:
        engine = await self._loaded(account_id)
        if engine is not None:
            account = await engine.update_cookie(account_id, cookie, actor=actor)
            return account if account is not None else await self.store.get_account(account_id)
        parse_cookie(cookie)
        return await self._told(account_id, await self.store.update_cookie(account_id, cookie, actor=actor))

    async def set_enabled(self, account_id: str, enabled: bool, *, actor: str) -> Account:
        engine = await self._loaded(account_id)
        if engine is not None:
            return await engine.set_enabled(account_id, enabled, actor=actor)
        return await self._told(account_id, await self.store.set_enabled(account_id, enabled, actor=actor))

    async def update(
        self, account_id: str, *, actor: str, proxy: Any = None, change_proxy: bool = False, **fields: Any
    ) -> Account:
        """PATCH: remark / pause_minutes / auto_confirm / owner, and the proxy (which reconnects the account)."""
        if change_proxy and proxy:
            await self.check_url(proxy, purpose=Purpose.PROXY, field="proxy")  # before the first of the writes
        engine = await self._loaded(account_id)
        account: Account | None = None
        if fields:
            if engine is not None:
                account = await engine.update_account(account_id, actor=actor, **fields)
            else:
                account = await self.store.update_account(account_id, actor=actor, **fields)
        if change_proxy:
            if engine is not None:
                account = await engine.update_proxy(account_id, proxy, actor=actor)
            else:
                account = await self.store.update_account(account_id, proxy=proxy, actor=actor)
        if engine is None:
            await self._tell_worker(account_id)
        return account if account is not None else await self.store.get_account(account_id)

    async def set_rules(self, account_id: str, rules: Sequence[Rule], *, actor: str) -> list[Rule]:
        engine = await self._loaded(account_id)
        if engine is not None:
            return await engine.set_rules(account_id, rules, actor=actor)
        return await self._told(account_id, await self.store.replace_rules(account_id, rules, actor=actor))

    async def set_settings(
        self, account_id: str, settings: AccountSettings, *, ai: AiSettingsUpdate | None, actor: str
    ) -> AccountSettings:
        if ai is not None and ai.base_url:
            await self.check_url(ai.base_url, purpose=Purpose.AI, field="ai.base_url")
        engine = await self._loaded(account_id)
        if engine is not None:
            return await engine.set_settings(account_id, settings, ai=ai, actor=actor)
        return await self._told(account_id, await self.store.put_settings(account_id, settings, ai=ai, actor=actor))

    async def set_delivery_rules(
        self, account_id: str, rules: Sequence[DeliveryRuleSpec], *, actor: str
    ) -> list[DeliveryRule]:
        await self._check_delivery_rules(account_id, rules)
        engine = await self._loaded(account_id)
        if engine is not None:
            return await engine.set_delivery_rules(account_id, rules, actor=actor)
        return await self.store.replace_delivery_rules(account_id, rules, actor=actor)

    async def _tell_worker(self, account_id: str) -> None:
        """Without an engine here (scale-out API node), the write is committed; the worker owning the account's
        bucket re-reads it through a `reload` command, awaited briefly so the answer means "applied". Nobody
        owning it, or a slow owner: the command waits in the table and the next owner loads the account anyway."""
        if await owner_of_account(self.store, account_id) is None:
            return
        command_id = await send_command(self.store, account_id, "reload", {})
        try:
            await wait_command(self.store, command_id, timeout=COMMAND_WAIT)
        except TimeoutError:
            log.warning("worker has not applied the change yet", account_id=account_id, command_id=command_id)

    async def _told(self, account_id: str, result: T) -> T:
        await self._tell_worker(account_id)
        return result

    # --- the live session -------------------------------------------------------------------------------------

    def _engine(self) -> AccountScheduler:
        if self.engine is None:
            raise ApiError(503, "engine_disabled", "this server runs without the engine (serve --no-engine)")
        return self.engine

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None) -> TryResult:
        engine = self._engine()
        await self._loaded(account_id)
        return await engine.try_reply(account_id, text, item_id=item_id)

    async def send_manual(self, account_id: str, chat_id: str, text: str, *, to_user: str | None) -> Sent:
        """Send the seller's own reply now; the buyer is found from the chat's log when not given."""
        engine = self._engine()
        session = engine.session(account_id)
        if session is None or not session.connected:
            raise ApiError(409, "account_not_connected", "the account is not connected; start it or wait")
        if to_user is None:
            to_user = await self._buyer_of(account_id, chat_id, seller=session.seller_id)
        return await engine.send_manual(account_id, chat_id, to_user, text)

    async def _buyer_of(self, account_id: str, chat_id: str, *, seller: str | None) -> str:
        for message in reversed(await self.store.list_messages(account_id, chat_id=chat_id, limit=50)):
            if message.direction is Direction.IN and message.sender_id and message.sender_id != seller:
                return message.sender_id
        raise ApiError(404, "chat_not_found", "no buyer message in this chat yet; give to_user", field="to_user")


def operations(request: Request) -> AccountOperations:
    """FastAPI dependency: the app's `AccountOperations`."""
    ops: AccountOperations = request.app.state.ops
    return ops
