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
import functools
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import structlog

from ..config import Settings
from ..outbound import OutboundGuard, OutboundPolicy
from ..platform.limits import ProcessLimits
from ..platform.mtop_client import MtopApi, MtopClient
from ..platform.session import AccountSession
from ..platform.values import ConnectionState, ReconnectPolicy, Reply, Sent, SessionOutcome, StateChange
from ..protocol import now_ms, parse_cookie
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
    AuthExpired,
    ConnectionChanged,
    CookieUpdated,
    EventBus,
    LifecycleChanged,
)
from .notify import Notifier, NotifyOptions
from .orders import DeliveryOptions, OrderDesk
from .pipeline import AccountPipeline
from .wiring import AccountWiring

log = structlog.get_logger("xianyu_autoreply.engine")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Engine tuning; the defaults suit production, tests shorten them."""

    connect_rate: float = 200.0  # session starts per second, all accounts together
    stop_timeout: float = 10.0  # wait this long for a session to close, then abandon it
    drain_timeout: float = 5.0  # before that, messages still being handled get this long to be answered
    crash_window: float = 300.0
    max_crashes: int = 5  # crashes within the window before an account is parked in `error`
    crash_backoff_base: float = 1.0
    crash_backoff_cap: float = 60.0
    ai_timeout: float = 20.0  # one AI answer, retries included; past it the default reply goes out
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    delivery: DeliveryOptions = field(default_factory=DeliveryOptions)  # orders: retries, sweep, webhook
    notify: NotifyOptions = field(default_factory=NotifyOptions)  # owner notifications


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
        self._next_start = 0.0
        self._pace_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.running = False
        self._chores: set[asyncio.Task[None]] = set()  # resumes after a connect
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
        self.notifier = Notifier(store=store, options=self.options.notify, outbound=self.outbound)

    # --- lifecycle of the engine ----------------------------------------------------------------------------

    async def start(self, *, progress: Callable[[int, int], None] | None = None) -> None:
        """Load every account and start the enabled ones (at the bounded connect rate)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._pace_lock = asyncio.Lock()
        if self._limits is None:
            self._limits = ProcessLimits()
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
                self._launch(rt)
            if progress is not None:
                progress(done, total)
        log.info("engine started", accounts=total, enabled=sum(rt.enabled for rt in self._runtimes.values()))

    async def stop(self) -> None:
        """Stop accepting work and close every session (1001) within the stop timeout."""
        self.running = False
        for chore in list(self._chores):
            chore.cancel()
        runtimes = list(self._runtimes.values())
        await asyncio.gather(*(self._halt(rt) for rt in runtimes), return_exceptions=True)
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
                self._launch(rt)
            return account

    async def remove(self, account_id: str, *, actor: str = "system") -> None:
        """Stop the account and delete it with its rules, settings, log and orders."""
        async with self._lock(account_id):
            await self.store.delete_account(account_id, actor=actor)
            self._preloaded.pop(account_id, None)
            rt = self._runtimes.pop(account_id, None)
            if rt is not None:
                await self._halt(rt)
                if rt.replier is not None:
                    await rt.replier.aclose()
                self._set_lifecycle(rt, Lifecycle.DELETED, "deleted")
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
            await self._halt(rt)
            rt.cookie = cookie.strip()
            rt.crashes.clear()
            if rt.enabled and self.running:
                self._launch(rt)
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
                    self._launch(rt)
            else:
                await self._halt(rt)
            return account

    async def update_proxy(self, account_id: str, proxy: str | None, *, actor: str = "system") -> Account:
        """Change the account's proxy; a running account reconnects through the new one."""
        async with self._lock(account_id):
            rt = self._runtime(account_id)
            account = await self.store.update_account(account_id, proxy=proxy, actor=actor)
            rt.proxy, rt.version = proxy, account.version
            if rt.task is not None:
                await self._halt(rt)
                if rt.enabled and self.running:
                    self._launch(rt)
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
                await self._halt(rt)
                self._set_lifecycle(rt, Lifecycle.DELETED, "reload")
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
                    await self._halt(rt)
                rt.enabled = secret.enabled
                if rt.replier is not None:
                    rt.replier.update(
                        rules=await self.wiring.rules(secret.id), settings=await self.wiring.reply_settings(secret.id)
                    )
                if rt.enabled and rt.task is None and self.running:
                    self._launch(rt)

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
                    self._launch(rt)
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
            await self._halt(rt, timeout=timeout, drain=drain)
            if rt.replier is not None:
                await rt.replier.aclose()

        await asyncio.gather(*(one(a) for a in account_ids), return_exceptions=True)
        with contextlib.suppress(Exception):
            # Before the lease passes on: the log entries those sessions queued (fenced or not) get written.
            await self.store.log_writer.flush()

    # --- supervision ----------------------------------------------------------------------------------------

    def _launch(self, rt: AccountRuntime) -> None:
        if not self._owned(rt.account_id):
            return  # scale-out: never a session for an account of a bucket this node does not hold
        rt.task = asyncio.get_running_loop().create_task(self._supervise(rt), name=f"account:{rt.account_id}")

    async def _supervise(self, rt: AccountRuntime) -> None:
        """Run the account's session; restart it after a crash with backoff; park it on auth loss or crash loops."""
        self._set_lifecycle(rt, Lifecycle.STARTING, "start")
        while True:
            # Paced before the replier's reads too: thousands of accounts starting at once would otherwise all
            # read the database together, and a pool timeout there used to end the supervisor for good.
            await self._pace()
            if rt.replier is None:
                try:
                    # Under the account's lock: a rule or setting change made meanwhile is then either already in
                    # the database we read, or applied to this replier after we made it. Never lost in between.
                    async with self._lock(rt.account_id):
                        if rt.replier is None:
                            rt.replier = await self.wiring.replier(rt, self._preloaded.pop(rt.account_id, None))
                except Exception as exc:
                    if not await self._crashed(rt, exc):
                        return
                    continue
            pipeline = self.wiring.pipeline(rt, limits=self._limits, on_state=functools.partial(self._on_state, rt))
            session = pipeline.session
            rt.session, rt.pipeline = session, pipeline
            try:
                outcome = await pipeline.run()
            except asyncio.CancelledError:
                await pipeline.close()
                raise
            except Exception as exc:
                rt.absorb(session.stats)
                rt.session = rt.pipeline = None
                if not await self._crashed(rt, exc) or not self._owned(rt.account_id):
                    return
                continue
            rt.absorb(session.stats)
            rt.session = rt.pipeline = None
            if outcome is SessionOutcome.AUTH_EXPIRED:
                rt.last_error = session.stats.last_error
                self._set_lifecycle(rt, Lifecycle.AUTH_EXPIRED, "login expired: a new cookie is needed")
                self.bus.publish(AuthExpired(account_id=rt.account_id))
            return

    async def _crashed(self, rt: AccountRuntime, exc: Exception) -> bool:
        """Record a crash; True to restart after the backoff, False when the account is parked in `error`."""
        now = time.monotonic()
        rt.crashes.append(now)
        while rt.crashes and now - rt.crashes[0] > self.options.crash_window:
            rt.crashes.popleft()
        rt.last_error = f"{type(exc).__name__}: {exc}"
        log.error("session crashed", account_id=rt.account_id, error=rt.last_error, crashes=len(rt.crashes))
        if len(rt.crashes) >= self.options.max_crashes:
            self._set_lifecycle(rt, Lifecycle.ERROR, rt.last_error)
            return False
        delay = min(self.options.crash_backoff_cap, self.options.crash_backoff_base * 2 ** (len(rt.crashes) - 1))
        self._set_lifecycle(rt, Lifecycle.BACKOFF, rt.last_error)
        await asyncio.sleep(delay)
        return True

    async def _halt(self, rt: AccountRuntime, *, timeout: float | None = None, drain: float | None = None) -> None:
        """Stop the account's session and supervisor; abandon them if they outlive the stop timeout.

        The session first lets the messages it is handling be answered (up to `drain` seconds): a pushed
        message is not pushed again, so one cut off here would never be answered.
        """
        timeout = self.options.stop_timeout if timeout is None else timeout
        drain = self.options.drain_timeout if drain is None else drain
        task, pipeline = rt.task, rt.pipeline
        rt.task = None
        if task is None:
            return
        if pipeline is not None:
            with contextlib.suppress(Exception):
                await pipeline.close(timeout=drain + timeout, drain=drain)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.error("session did not stop in time; abandoned", account_id=rt.account_id)
        rt.session = rt.pipeline = None
        if rt.lifecycle not in (Lifecycle.DELETED,):
            self._set_lifecycle(rt, Lifecycle.STOPPED, "stopped")

    async def _pace(self) -> None:
        """Space session starts out to `connect_rate` per second across the whole engine."""
        assert self._pace_lock is not None
        async with self._pace_lock:
            now = time.monotonic()
            wait = self._next_start - now
            self._next_start = max(now, self._next_start) + 1.0 / self.options.connect_rate
        if wait > 0:
            await asyncio.sleep(wait)

    def _set_lifecycle(self, rt: AccountRuntime, lifecycle: Lifecycle, reason: str) -> None:
        if lifecycle is rt.lifecycle:
            return
        rt.lifecycle = lifecycle
        rt.since_ms = now_ms()
        self.bus.publish(LifecycleChanged(account_id=rt.account_id, lifecycle=lifecycle.value, reason=reason))

    # --- one session and its pipeline ----------------------------------------------------------------------

    def _on_state(self, rt: AccountRuntime, change: StateChange) -> None:
        """The session's connection state, made the account's lifecycle; a connect resumes what was left."""
        if change.state is ConnectionState.CONNECTED:
            self._set_lifecycle(rt, Lifecycle.RUNNING, change.reason)
            if rt.pipeline is not None:
                self._background(self._resume(rt, rt.pipeline), name=f"resume:{rt.account_id}")
        elif change.state is ConnectionState.RECONNECTING and rt.lifecycle is not Lifecycle.STARTING:
            rt.last_error = rt.session.stats.last_error if rt.session is not None else change.reason
            self._set_lifecycle(rt, Lifecycle.BACKOFF, change.reason)
        self.bus.publish(ConnectionChanged(account_id=rt.account_id, state=change.state.value, reason=change.reason))

    def _background(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _resume(self, rt: AccountRuntime, pipeline: AccountPipeline) -> None:
        """After every connect: what the account recorded and never finished, once per row (engine/steps.py)."""
        assert rt.steps is not None
        try:
            counts = await rt.steps.resume(pipeline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not look for unfinished messages", account_id=rt.account_id, error=type(exc).__name__)
            return
        if counts:
            log.info("resumed unfinished messages", account_id=rt.account_id, **counts)

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
