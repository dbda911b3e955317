"""AccountScheduler: every account in its own supervised session, and one truth shared by memory and database.

The seeds' CookieManager, kept to its promises:
- Every operation on an account (add, remove, update cookie, enable/disable, rules, settings, reload) runs under
  that account's lock and writes through: the database transaction commits first, then memory and tasks change.
  A refused input or a failed write raises before anything in memory or any running task was touched.
- A supervisor task per enabled account runs its session and pipeline (built by `AccountWiring`, wiring.py); a
  crash restarts it with backoff, too many crashes in a window park it in `error`, and a lost login in
  `auth_expired`. No account can take another down.
- Sessions start at a bounded rate, so thousands of accounts come up without a thundering herd.
- Rule and setting changes reach the account's `AccountReplier` at once; the session keeps running.
- Nothing acknowledged is lost: the pipeline acknowledges a push only after its `record` step stored the items;
  on every (re)connect `_resume` hands back what the account recorded and never finished (a kill, a drain cut
  short, a bucket taken over), exactly once: a reply is sent only by the handler whose `begin_reply` moved the row.

Lifecycle: stopped -> starting -> running <-> backoff, and auth_expired / error / deleted (DESIGN §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import structlog

from ..config import Settings
from ..outbound import OutboundGuard, OutboundPolicy
from ..platform.ai import preload_sdk
from ..platform.limits import ProcessLimits
from ..platform.mtop_client import MtopApi, MtopClient
from ..platform.session import AccountSession
from ..platform.values import Reply, Sent
from ..protocol import parse_cookie
from ..replies import (
    AIReplyError,
    ReplyKind,
    Rule,
    RuleIndex,
    TryResult,
    try_reply,
    validate_template,
)
from ..store import (
    Account,
    AccountNotFound,
    AccountSettings,
    AiSettingsUpdate,
    DeliveryRule,
    DeliveryRuleSpec,
    InvalidValue,
    Store,
)
from ..store.accounts import ReplyConfig
from ..store.cluster import Fence
from .account import AccountRuntime, AccountState, Lifecycle
from .errors import NotConnected
from .events import (
    AccountAdded,
    CookieUpdated,
    EventBus,
)
from .notify import Notifier
from .orders import OrderDesk
from .pipeline import AccountPipeline
from .supervisor import EngineOptions, Supervisor
from .wiring import AccountWiring

log = structlog.get_logger("xianyu_autoreply.engine")
T = TypeVar("T")


class AccountScheduler:
    """Runs every account of one store; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        mtop: MtopApi | None = None,
        bus: EventBus | None = None,
        limits: ProcessLimits | None = None,
        options: EngineOptions | None = None,
        owns: Callable[[str], bool] | None = None,
        fence: Callable[[str], Fence | None] | None = None,
    ) -> None:
        """`owns` and `fence` are the scale-out hooks (engine/cluster.py): which accounts this node may run, and
        the lease proof its sessions' writes carry. Without them the scheduler runs every account, unfenced."""
        self.store = store
        self.settings = settings
        self.bus = bus or EventBus()
        self.options = options or EngineOptions()
        self._owns = owns
        self._fence = fence
        # The policy for the URLs owners choose (webhooks, notifications, AI, proxies): outbound.py.
        self.outbound = OutboundGuard(OutboundPolicy.from_settings(settings.outbound))
        self._owns_mtop = mtop is None
        self.mtop: MtopApi = mtop or MtopClient(
            mtop_url=settings.platform.mtop_url, passport_url=settings.platform.passport_url, outbound=self.outbound
        )
        self._limits = limits
        self._runtimes: dict[str, AccountRuntime] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Reply configs read in bulk at start/attach, each used once by its account's first replier; any change
        # to the account through this scheduler (or a reload) drops its entry, so a newer setting is never lost.
        self._preloaded: dict[str, ReplyConfig] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.running = False
        # Orders and owner notifications (engine/orders/, engine/notify.py); each account's parts: engine/wiring.py.
        self.orders = OrderDesk(
            store=store,
            mtop=self.mtop,
            bus=self.bus,
            session_for=self.pipeline,
            proxy_for=lambda account_id: rt.proxy if (rt := self._runtimes.get(account_id)) else None,
            fence_for=self.fence_for,
            options=self.options.delivery,
            outbound=self.outbound,
        )
        self.wiring = AccountWiring(
            store=store,
            settings=settings,
            mtop=self.mtop,
            bus=self.bus,
            orders=self.orders,
            outbound=self.outbound,
            policy=self.options.policy,
            ai_timeout=self.options.ai_timeout,
            fence_for=self.fence_for,
        )
        self._supervisor = Supervisor(
            options=self.options,
            bus=self.bus,
            wiring=self.wiring,
            lock=self._lock,
            preloaded=self._preloaded,
            owned=self._owned,
        )
        self.notifier = Notifier(store=store, options=self.options.notify, outbound=self.outbound)

    # --- lifecycle of the engine ----------------------------------------------------------------------------

    async def start(self, *, progress: Callable[[int, int], None] | None = None) -> None:
        """Load every account and start the enabled ones (at the bounded connect rate)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self._limits is None:
            self._limits = ProcessLimits()
        self._supervisor.limits = self._limits
        self._supervisor.background(asyncio.to_thread(preload_sdk), name="preload-ai-sdk")
        self.running = True
        self.notifier.watch(self.bus)
        self.orders.start(self._connected_accounts)
        secrets = [x for x in await self.store.list_account_secrets(enabled=None) if self._owned(x.id)]
        self._preloaded.update(await self.store.get_reply_configs([x.id for x in secrets if x.enabled]))
        total = len(secrets)
        for done, secret in enumerate(secrets, 1):
            rt = AccountRuntime(
                secret.id, cookie=secret.cookie, proxy=secret.proxy, enabled=secret.enabled, version=secret.version
            )
            self._runtimes[secret.id] = rt
            if rt.enabled:
                self._supervisor.launch(rt)
            if progress is not None:
                progress(done, total)
        log.info("engine started", accounts=total, enabled=sum(rt.enabled for rt in self._runtimes.values()))

    async def stop(self) -> None:
        """Stop accepting work and close every session (1001) within the stop timeout."""
        self.running = False
        self._supervisor.cancel_chores()
        runtimes = list(self._runtimes.values())
        await asyncio.gather(*(self._supervisor.halt(rt) for rt in runtimes), return_exceptions=True)
        self._preloaded.clear()
        for rt in runtimes:
            if rt.replier is not None:
                await rt.replier.aclose()
        with contextlib.suppress(Exception):
            await self.store.log_writer.flush()  # the decisions and replies still queued for the log
        await self.orders.aclose()
        await self.notifier.aclose()
        if self._owns_mtop and isinstance(self.mtop, MtopClient):
            await self.mtop.aclose()
        log.info("engine stopped")

    # --- reading --------------------------------------------------------------------------------------------

    def state(self, account_id: str) -> AccountState:
        rt = self._runtimes.get(account_id)
        if rt is None:
            raise AccountNotFound(account_id)
        return rt.state()

    def states(self) -> list[AccountState]:
        return [rt.state() for rt in self._runtimes.values()]

    def account_ids(self) -> list[str]:
        return list(self._runtimes)

    def session(self, account_id: str) -> AccountSession | None:
        rt = self._runtimes.get(account_id)
        return rt.session if rt is not None else None

    def pipeline(self, account_id: str) -> AccountPipeline | None:
        """The account's live pipeline: what sends on its behalf (replies, deliveries, manual answers)."""
        rt = self._runtimes.get(account_id)
        return rt.pipeline if rt is not None else None

    def _connected_accounts(self) -> list[str]:
        """Accounts whose session is connected now: the ones whose deliveries this engine works on."""
        return [a for a, rt in self._runtimes.items() if rt.session is not None and rt.session.connected]

    # --- operations (each: account lock, database first, then memory and tasks) -----------------------------

    async def add(
        self,
        account_id: str,
        cookie: str,
        *,
        owner: str | None = None,
        enabled: bool = True,
        remark: str = "",
        proxy: str | None = None,
        actor: str = "system",
    ) -> Account:
        """Create an account and start it when enabled; an invalid cookie is refused before any write."""
        parse_cookie(cookie)
        async with self._lock(account_id):
            account = await self.store.create_account(
                account_id, cookie, owner=owner, enabled=enabled, remark=remark, proxy=proxy, actor=actor
            )
            if not self._owned(account_id):
                return account  # scale-out: the node that owns its bucket runs it
            rt = AccountRuntime(
                account_id, cookie=cookie.strip(), proxy=proxy, enabled=enabled, version=account.version
            )
            self._runtimes[account_id] = rt
            self.bus.publish(AccountAdded(account_id=account_id))
            if enabled and self.running:
                self._supervisor.launch(rt)
            return account

    async def remove(self, account_id: str, *, actor: str = "system") -> None:
        """Stop the account and delete it with its rules, settings, log and orders."""
        async with self._lock(account_id):
            await self.store.delete_account(account_id, actor=actor)
            self._preloaded.pop(account_id, None)
            rt = self._runtimes.pop(account_id, None)
            if rt is not None:
                await self._supervisor.halt(rt)
                if rt.replier is not None:
                    await rt.replier.aclose()
                self._supervisor.set_lifecycle(rt, Lifecycle.DELETED, "deleted")
        # The lock stays: a caller already waiting on it must keep excluding the next one (an id re-added later).

    async def update_cookie(
        self, account_id: str, cookie: str, *, save_to_db: bool = True, actor: str = "system"
    ) -> Account | None:
        """Replace the cookie and restart only this account (the old session gets the stop timeout to close)."""
        parse_cookie(cookie)
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            account = None
            if save_to_db:
                account = await self.store.update_cookie(account_id, cookie, actor=actor)
                rt.version = account.version
            await self._supervisor.halt(rt)
            rt.cookie = cookie.strip()
            rt.crashes.clear()
            if rt.enabled and self.running:
                self._supervisor.launch(rt)
            self.bus.publish(CookieUpdated(account_id=account_id))
            return account

    async def set_enabled(self, account_id: str, enabled: bool, *, actor: str = "system") -> Account:
        """Start or stop the account, after saving the choice."""
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            account = await self.store.set_enabled(account_id, enabled, actor=actor)
            rt.enabled = enabled
            rt.version = account.version
            if enabled:
                rt.crashes.clear()
                if self.running and rt.task is None:
                    self._supervisor.launch(rt)
            else:
                await self._supervisor.halt(rt)
            return account

    async def update_proxy(self, account_id: str, proxy: str | None, *, actor: str = "system") -> Account:
        """Change the account's proxy; a running account reconnects through the new one."""
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            account = await self.store.update_account(account_id, proxy=proxy, actor=actor)
            rt.proxy, rt.version = proxy, account.version
            if rt.task is not None:
                await self._supervisor.halt(rt)
                if rt.enabled and self.running:
                    self._supervisor.launch(rt)
            return account

    async def update_account(self, account_id: str, *, actor: str = "system", **fields: Any) -> Account:
        """Change remark, pause minutes, auto-confirm or owner (PATCH); the next message sees the change."""
        allowed = {"remark", "pause_minutes", "auto_confirm", "owner"}
        unknown = set(fields) - allowed
        if unknown:
            raise InvalidValue(f"cannot change {sorted(unknown)} here")
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            account = await self.store.update_account(account_id, actor=actor, **fields)
            rt.version = account.version
            self._preloaded.pop(account_id, None)
            if rt.replier is not None:
                rt.replier.update(settings=await self.wiring.reply_settings(account_id))
            return account

    async def set_delivery_rules(
        self, account_id: str, rules: Sequence[DeliveryRuleSpec], *, actor: str = "system"
    ) -> list[DeliveryRule]:
        """Replace the account's delivery rules (read at each delivery, so they apply to the next paid order)."""
        async with self._lock(account_id):
            self._runtime(account_id)
            return await self.store.replace_delivery_rules(account_id, rules, actor=actor)

    async def set_rules(self, account_id: str, rules: Sequence[Rule], *, actor: str = "system") -> list[Rule]:
        """Replace the keyword rules; refused whole (nothing saved) when any rule is invalid."""
        for rule in rules:
            if rule.kind is ReplyKind.TEXT:
                validate_template(rule.reply)
        RuleIndex.build(rules)  # validate before writing
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            saved = await self.store.replace_rules(account_id, rules, actor=actor)
            self._preloaded.pop(account_id, None)
            if rt.replier is not None:
                rt.replier.update(rules=RuleIndex.build(saved))
            return saved

    async def set_settings(
        self,
        account_id: str,
        settings: AccountSettings,
        *,
        ai: AiSettingsUpdate | None = None,
        actor: str = "system",
    ) -> AccountSettings:
        """Save reply (and AI) settings; they apply to the next message."""
        if settings.default_reply:
            validate_template(settings.default_reply)
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            saved = await self.store.put_settings(account_id, settings, ai=ai, actor=actor)
            self._preloaded.pop(account_id, None)
            if rt.replier is not None:
                rt.replier.update(settings=await self.wiring.reply_settings(account_id))
            return saved

    async def reload(self, account_id: str | None = None) -> None:
        """Re-read accounts from the database and make memory and tasks match it."""
        ids = [account_id] if account_id is not None else None
        if account_id is None:
            self._preloaded.clear()
        else:
            self._preloaded.pop(account_id, None)
        secrets = await self.store.list_account_secrets(enabled=None)
        by_id = {s.id: s for s in secrets if (ids is None or s.id in ids) and self._owned(s.id)}
        for gone in [i for i in self._runtimes if (ids is None or i in ids) and i not in by_id]:
            async with self._lock(gone):
                rt = self._runtimes.pop(gone)
                await self._supervisor.halt(rt)
                self._supervisor.set_lifecycle(rt, Lifecycle.DELETED, "reload")
        for secret in by_id.values():
            async with self._lock(secret.id):
                known = self._runtimes.get(secret.id)
                if known is None:
                    known = AccountRuntime(
                        secret.id, cookie=secret.cookie, proxy=secret.proxy, enabled=False, version=0
                    )
                    self._runtimes[secret.id] = known
                rt = known
                changed = (rt.cookie, rt.proxy) != (secret.cookie, secret.proxy)
                rt.cookie, rt.proxy, rt.version = secret.cookie, secret.proxy, secret.version
                if rt.task is not None and (changed or not secret.enabled):
                    await self._supervisor.halt(rt)
                rt.enabled = secret.enabled
                if rt.replier is not None:
                    rt.replier.update(
                        rules=await self.wiring.rules(secret.id), settings=await self.wiring.reply_settings(secret.id)
                    )
                if rt.enabled and rt.task is None and self.running:
                    self._supervisor.launch(rt)

    async def send_manual(self, account_id: str, chat_id: str, to_user: str, text: str) -> Sent:
        """The seller answers by hand through the account's session; auto-replies in that chat pause."""
        rt = self._runtime(account_id)
        pipeline = rt.pipeline
        if pipeline is None or not pipeline.session.connected:
            raise NotConnected(account_id)
        if rt.replier is not None:
            rt.replier.pause_chat(chat_id)
        return await pipeline.send(chat_id, to_user, Reply(text=text, source="manual"))

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None = None) -> TryResult:
        """What the account would answer to `text` now (its current rules and settings), without sending.

        When the policy would ask the AI, the AI is asked (so the seller sees the real answer) and, should it
        fail, the fallback is shown with the reason.
        """
        rt = self._runtime(account_id)
        rules = rt.replier.rules if rt.replier is not None else await self.wiring.rules(account_id)
        settings = rt.replier.settings if rt.replier is not None else await self.wiring.reply_settings(account_id)
        result = try_reply(text, item_id=item_id, rules=rules, settings=settings)
        if result.ai_query is None:
            return result
        ai = self.wiring.ai(settings)
        try:
            answer = await ai.reply(result.ai_query)
        except AIReplyError as exc:
            return replace(result, reply=result.fallback_reply, source="default", reason=f"ai_failed: {exc}")
        finally:
            await ai.aclose()
        return replace(
            result, reply=answer.text, source="ai" if answer.blocked is None else f"ai:blocked:{answer.blocked}"
        )

    def call_threadsafe(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run an operation from another thread and wait for it (inside the loop, simply `await` it)."""
        if self._loop is None:
            raise RuntimeError("the engine is not started")
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("call_threadsafe would deadlock on the engine's own loop: await the method instead")
        return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop).result()

    # --- scale-out hooks (engine/cluster.py): a node runs only the accounts of the buckets it leases --------

    def fence_for(self, account_id: str) -> Fence | None:
        """The lease proof for a write on behalf of this account's session (None: single node, unfenced)."""
        return self._fence(account_id) if self._fence is not None else None

    def _owned(self, account_id: str) -> bool:
        return self._owns is None or self._owns(account_id)

    async def attach(self, account_ids: Collection[str]) -> int:
        """Load and start accounts whose bucket this node just took; returns how many were new here."""
        wanted = [a for a in account_ids if a not in self._runtimes]
        if not wanted:
            return 0
        added = 0
        secrets = await self.store.list_account_secrets(enabled=None, account_ids=wanted)
        configs = await self.store.get_reply_configs([x.id for x in secrets if x.enabled])
        for secret in secrets:
            async with self._lock(secret.id):
                if secret.id in self._runtimes or not self._owned(secret.id):
                    continue
                rt = AccountRuntime(
                    secret.id, cookie=secret.cookie, proxy=secret.proxy, enabled=secret.enabled, version=secret.version
                )
                self._runtimes[secret.id] = rt
                if secret.id in configs:
                    self._preloaded[secret.id] = configs[secret.id]
                added += 1
                if rt.enabled and self.running:
                    self._supervisor.launch(rt)
        return added

    async def detach(self, account_ids: Collection[str], *, timeout: float | None = None, drain: float = 0.0) -> None:
        """Stop and forget accounts whose bucket this node lost or hands over (the database keeps them).

        Runs all at once, within `drain` (messages in flight are answered) + `timeout` (sessions close): the node
        must be done before its lease could pass to another.
        An operation holding an account's lock does not delay it; `_launch` refuses unowned accounts meanwhile.
        """

        async def one(account_id: str) -> None:
            self._preloaded.pop(account_id, None)
            rt = self._runtimes.pop(account_id, None)
            if rt is None:
                return
            await self._supervisor.halt(rt, timeout=timeout, drain=drain)
            if rt.replier is not None:
                await rt.replier.aclose()

        await asyncio.gather(*(one(a) for a in account_ids), return_exceptions=True)
        with contextlib.suppress(Exception):
            # Before the lease passes on: the log entries those sessions queued (fenced or not) get written.
            await self.store.log_writer.flush()

    def _runtime(self, account_id: str) -> AccountRuntime:
        rt = self._runtimes.get(account_id)
        if rt is None:
            raise AccountNotFound(account_id)
        return rt

    def _lock(self, account_id: str) -> asyncio.Lock:
        lock = self._locks.get(account_id)
        if lock is None:
            lock = self._locks[account_id] = asyncio.Lock()
        return lock


__all__ = ["AccountScheduler", "AccountState", "EngineOptions", "Lifecycle"]
