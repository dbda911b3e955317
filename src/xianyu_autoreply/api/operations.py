"""The API's one way to change accounts: ownership and URL checks here, then the app's `AccountControl`.

Which control runs the write (the engine in this process, or the store plus a `reload` command to the worker that
owns the account under `serve --no-engine`) is picked once at start-up: see control.py.
Every URL an owner chooses (proxy, AI base URL, webhook rule, notification URL) passes the outbound policy
(outbound.py) before anything is written: a refusal is a 422 naming the field and the reason, and changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import Request

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
    Role,
    Rule,
    Store,
    User,
)
from .control import AccountControl, control_for
from .errors import ApiError, not_found
from .schemas import AccountState

log = structlog.get_logger("xianyu_autoreply.api")


def may_see(user: User, account: Account) -> bool:
    """An admin sees every account, a user only their own."""
    return user.role is Role.ADMIN or account.owner == user.username


class AccountOperations:
    """Reads with ownership checks, and writes that keep engine and database in step."""

    def __init__(
        self,
        store: Store,
        engine: AccountScheduler | None,
        *,
        outbound: OutboundGuard | None = None,
        control: AccountControl | None = None,
    ) -> None:
        """`outbound`: the administrator's policy for owners' URLs (public addresses only when not given);
        `control`: how writes reach the account (by default the one `control_for` picks for `engine`)."""
        self.store = store
        self.engine = engine  # the live state the web admin shows; writes go through `control` only
        self.outbound = outbound or OutboundGuard()
        self.control = control if control is not None else control_for(store, engine)

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
        """Live state (`stopped` for an account the engine has not loaded; `unknown` without engine)."""
        return self.control.state(account_id)

    async def node_of(self, account_id: str) -> str | None:
        """The worker that runs the account when this process does not (None otherwise, or nobody)."""
        return await self.control.node_of(account_id)

    # --- writing: checks, then the control ----------------------------------------------------------------------

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
        return await self.control.add(
            account_id, cookie, owner=owner, enabled=enabled, remark=remark, proxy=proxy, actor=actor
        )

    async def remove(self, account_id: str, *, actor: str) -> None:
        await self.control.remove(account_id, actor=actor)

    async def update_cookie(self, account_id: str, cookie: str, *, actor: str) -> Account:
        return await self.control.update_cookie(account_id, cookie, actor=actor)

    async def set_enabled(self, account_id: str, enabled: bool, *, actor: str) -> Account:
        return await self.control.set_enabled(account_id, enabled, actor=actor)

    async def update(
        self, account_id: str, *, actor: str, proxy: str | None = None, change_proxy: bool = False, **fields: Any
    ) -> Account:
        """PATCH: remark / pause_minutes / auto_confirm / owner, and the proxy (which reconnects the account)."""
        if change_proxy and proxy:
            await self.check_url(proxy, purpose=Purpose.PROXY, field="proxy")  # before the first of the writes
        return await self.control.update(account_id, fields, proxy=proxy, change_proxy=change_proxy, actor=actor)

    async def set_rules(self, account_id: str, rules: Sequence[Rule], *, actor: str) -> list[Rule]:
        return await self.control.set_rules(account_id, rules, actor=actor)

    async def set_settings(
        self, account_id: str, settings: AccountSettings, *, ai: AiSettingsUpdate | None, actor: str
    ) -> AccountSettings:
        if ai is not None and ai.base_url:
            await self.check_url(ai.base_url, purpose=Purpose.AI, field="ai.base_url")
        return await self.control.set_settings(account_id, settings, ai=ai, actor=actor)

    async def set_delivery_rules(
        self, account_id: str, rules: Sequence[DeliveryRuleSpec], *, actor: str
    ) -> list[DeliveryRule]:
        await self._check_delivery_rules(account_id, rules)
        return await self.control.set_delivery_rules(account_id, rules, actor=actor)

    # --- the live session -------------------------------------------------------------------------------------

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None) -> TryResult:
        return await self.control.try_reply(account_id, text, item_id=item_id)

    async def send_manual(self, account_id: str, chat_id: str, text: str, *, to_user: str | None) -> Sent:
        """Send the seller's own reply now; the buyer is found from the chat's log when not given."""
        return await self.control.send_manual(account_id, chat_id, text, to_user=to_user)


def operations(request: Request) -> AccountOperations:
    """FastAPI dependency: the app's `AccountOperations`."""
    ops: AccountOperations = request.app.state.ops
    return ops
