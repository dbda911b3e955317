"""`AccountControl`: the account writes the API and the web admin make, in one shape with two implementations.

- `LocalControl`: this process runs the engine. Every write goes through `AccountScheduler` (account lock,
  database first, then memory and the running session), so memory and database never disagree. An account
  created behind the engine's back (the `accounts` CLI) is loaded into it before the first write.
- `CommandControl`: `serve --no-engine` (a scale-out API node). The write is committed to the database, then the
  worker that owns the account's bucket re-reads it through a `reload` command (engine/cluster.py), awaited
  briefly so that the answer means "applied". Trying a reply or sending needs a live session: `NoEngine`.

The app picks one at start-up (`control_for`); checks that do not depend on where the account runs (ownership,
the outbound policy for owners' URLs) stay in `AccountOperations` in front of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import structlog

from ..engine.cluster import CommandKind, owner_of_account, send_command, wait_command
from ..engine.errors import NoEngine, NotConnected
from ..engine.scheduler import AccountScheduler
from ..platform.session import Sent
from ..protocol import parse_cookie
from ..replies import TryResult
from ..store import (
    Account,
    AccountNotFound,
    AccountSettings,
    AiSettingsUpdate,
    DeliveryRule,
    DeliveryRuleSpec,
    Direction,
    Rule,
    Store,
)
from .errors import ApiError
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


class AccountControl(Protocol):
    """The account write operations; each raises the store's, the protocol's or the engine's typed errors."""

    def state(self, account_id: str) -> AccountState:
        """Live state of the account as this process knows it."""
        ...

    async def node_of(self, account_id: str) -> str | None:
        """Which worker runs the account (None: this process, or nobody)."""
        ...

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
    ) -> Account: ...

    async def remove(self, account_id: str, *, actor: str) -> None: ...

    async def update_cookie(self, account_id: str, cookie: str, *, actor: str) -> Account: ...

    async def set_enabled(self, account_id: str, enabled: bool, *, actor: str) -> Account: ...

    async def update(
        self, account_id: str, fields: Mapping[str, Any], *, proxy: str | None, change_proxy: bool, actor: str
    ) -> Account:
        """`fields` (remark, pause_minutes, auto_confirm, owner) and, with `change_proxy`, the proxy."""
        ...

    async def set_rules(self, account_id: str, rules: Sequence[Rule], *, actor: str) -> list[Rule]: ...

    async def set_settings(
        self, account_id: str, settings: AccountSettings, *, ai: AiSettingsUpdate | None, actor: str
    ) -> AccountSettings: ...

    async def set_delivery_rules(
        self, account_id: str, rules: Sequence[DeliveryRuleSpec], *, actor: str
    ) -> list[DeliveryRule]: ...

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None) -> TryResult: ...

    async def send_manual(self, account_id: str, chat_id: str, text: str, *, to_user: str | None) -> Sent:
        """Send the seller's own reply now; the buyer is found from the chat's log when not given."""
        ...


def control_for(store: Store, engine: AccountScheduler | None) -> AccountControl:
    """The in-process engine when this process runs one, else commands to the worker that owns the account."""
    return LocalControl(engine, store) if engine is not None else CommandControl(store)


class LocalControl:
    """Writes through this process's `AccountScheduler`."""

    def __init__(self, engine: AccountScheduler, store: Store) -> None:
        self.engine = engine
        self.store = store

    def state(self, account_id: str) -> AccountState:
        """`stopped` for an account the engine has not loaded."""
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

    async def node_of(self, account_id: str) -> str | None:
        return None

    async def _load(self, account_id: str) -> None:
        """Load an account created behind the engine's back (the `accounts` CLI) before writing to it."""
        if account_id not in self.engine.account_ids():
            await self.engine.reload(account_id)

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
        return await self.engine.add(
            account_id, cookie, owner=owner, enabled=enabled, remark=remark, proxy=proxy, actor=actor
        )

    async def remove(self, account_id: str, *, actor: str) -> None:
        await self._load(account_id)
        await self.engine.remove(account_id, actor=actor)

    async def update_cookie(self, account_id: str, cookie: str, *, actor: str) -> Account:
        await self._load(account_id)
        account = await self.engine.update_cookie(account_id, cookie, actor=actor)
        return account if account is not None else await self.store.get_account(account_id)

    async def set_enabled(self, account_id: str, enabled: bool, *, actor: str) -> Account:
        await self._load(account_id)
        return await self.engine.set_enabled(account_id, enabled, actor=actor)

    async def update(
        self, account_id: str, fields: Mapping[str, Any], *, proxy: str | None, change_proxy: bool, actor: str
    ) -> Account:
        await self._load(account_id)
        account: Account | None = None
        if fields:
            account = await self.engine.update_account(account_id, actor=actor, **fields)
        if change_proxy:
            account = await self.engine.update_proxy(account_id, proxy, actor=actor)
        return account if account is not None else await self.store.get_account(account_id)

    async def set_rules(self, account_id: str, rules: Sequence[Rule], *, actor: str) -> list[Rule]:
        await self._load(account_id)
        return await self.engine.set_rules(account_id, rules, actor=actor)

    async def set_settings(
        self, account_id: str, settings: AccountSettings, *, ai: AiSettingsUpdate | None, actor: str
    ) -> AccountSettings:
        await self._load(account_id)
        return await self.engine.set_settings(account_id, settings, ai=ai, actor=actor)

    async def set_delivery_rules(
        self, account_id: str, rules: Sequence[DeliveryRuleSpec], *, actor: str
    ) -> list[DeliveryRule]:
        await self._load(account_id)
        return await self.engine.set_delivery_rules(account_id, rules, actor=actor)

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None) -> TryResult:
        await self._load(account_id)
        return await self.engine.try_reply(account_id, text, item_id=item_id)

    async def send_manual(self, account_id: str, chat_id: str, text: str, *, to_user: str | None) -> Sent:
        session = self.engine.session(account_id)
        if session is None or not session.connected:
            raise NotConnected(account_id)
        if to_user is None:
            to_user = await self._buyer_of(account_id, chat_id, seller=session.seller_id)
        return await self.engine.send_manual(account_id, chat_id, to_user, text)

    async def _buyer_of(self, account_id: str, chat_id: str, *, seller: str | None) -> str:
        for message in reversed(await self.store.list_messages(account_id, chat_id=chat_id, limit=50)):
            if message.direction is Direction.IN and message.sender_id and message.sender_id != seller:
                return message.sender_id
        raise ApiError(404, "chat_not_found", "no buyer message in this chat yet; give to_user", field="to_user")


class CommandControl:
    """Writes the database, then has the worker that owns the account re-read it (`reload` command)."""

    def __init__(self, store: Store, *, wait: float = COMMAND_WAIT) -> None:
        self.store = store
        self.wait = wait

    def state(self, account_id: str) -> AccountState:
        """`unknown`: the live state is in the worker's memory; `node_of` says which worker."""
        return UNKNOWN_STATE

    async def node_of(self, account_id: str) -> str | None:
        return await owner_of_account(self.store, account_id)

    async def _tell_worker(self, account_id: str) -> None:
        """The write is committed; the worker owning the account's bucket re-reads it. Nobody owning it, or a slow
        owner: the command waits in the table and the next owner loads the account anyway."""
        if await owner_of_account(self.store, account_id) is None:
            return
        command_id = await send_command(self.store, account_id, CommandKind.RELOAD, {})
        try:
            await wait_command(self.store, command_id, timeout=self.wait)
        except TimeoutError:
            log.warning("worker has not applied the change yet", account_id=account_id, command_id=command_id)

    async def _told(self, account_id: str, result: T) -> T:
        await self._tell_worker(account_id)
        return result

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
        account = await self.store.create_account(
            account_id, cookie, owner=owner, enabled=enabled, remark=remark, proxy=proxy, actor=actor
        )
        return await self._told(account_id, account)

    async def remove(self, account_id: str, *, actor: str) -> None:
        await self.store.delete_account(account_id, actor=actor)
        await self._tell_worker(account_id)

    async def update_cookie(self, account_id: str, cookie: str, *, actor: str) -> Account:
        parse_cookie(cookie)
        return await self._told(account_id, await self.store.update_cookie(account_id, cookie, actor=actor))

    async def set_enabled(self, account_id: str, enabled: bool, *, actor: str) -> Account:
        return await self._told(account_id, await self.store.set_enabled(account_id, enabled, actor=actor))

    async def update(
        self, account_id: str, fields: Mapping[str, Any], *, proxy: str | None, change_proxy: bool, actor: str
    ) -> Account:
        account: Account | None = None
        if fields:
            account = await self.store.update_account(account_id, actor=actor, **fields)
        if change_proxy:
            account = await self.store.update_account(account_id, proxy=proxy, actor=actor)
        await self._tell_worker(account_id)
        return account if account is not None else await self.store.get_account(account_id)

    async def set_rules(self, account_id: str, rules: Sequence[Rule], *, actor: str) -> list[Rule]:
        return await self._told(account_id, await self.store.replace_rules(account_id, rules, actor=actor))

    async def set_settings(
        self, account_id: str, settings: AccountSettings, *, ai: AiSettingsUpdate | None, actor: str
    ) -> AccountSettings:
        return await self._told(account_id, await self.store.put_settings(account_id, settings, ai=ai, actor=actor))

    async def set_delivery_rules(
        self, account_id: str, rules: Sequence[DeliveryRuleSpec], *, actor: str
    ) -> list[DeliveryRule]:
        # Read from the database at each delivery (engine/orders/): nothing for the worker to reload.
        return await self.store.replace_delivery_rules(account_id, rules, actor=actor)

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None) -> TryResult:
        raise NoEngine()

    async def send_manual(self, account_id: str, chat_id: str, text: str, *, to_user: str | None) -> Sent:
        raise NoEngine()
