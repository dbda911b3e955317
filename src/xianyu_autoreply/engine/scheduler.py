"""AccountScheduler: every account in its own supervised session, and one truth shared by memory and database.

The seeds' CookieManager, kept to its promises:
- Every operation on an account (add, remove, update cookie, enable/disable, rules, settings, reload) runs under
  that account's lock and writes through: the database transaction commits first, then memory and tasks change.
  A refused input or a failed write raises before anything in memory or any running task was touched.
- A supervisor task per enabled account runs its `AccountSession`; a crash restarts it with backoff, too many
  crashes in a window park it in `error`, and a lost login in `auth_expired`. No account can take another down.
- Sessions start at a bounded rate, so thousands of accounts come up without a thundering herd.
- Rule and setting changes reach the account's `AccountReplier` at once; the session keeps running.
- Nothing acknowledged is lost: a session acknowledges a push only after `record` stored its items; on every
  (re)connect `_resume` handles what the account recorded and never finished (a kill, a drain cut short, a bucket
  taken over), exactly once: a reply is sent only by the handler whose `begin_reply` moved the row.

Lifecycle: stopped -> starting -> running <-> backoff, and auth_expired / error / deleted (DESIGN §2).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import structlog

from ..config import Settings
from ..outbound import OutboundGuard, OutboundPolicy
from ..platform.errors import NotRecorded
from ..platform.limits import ProcessLimits
from ..platform.mtop_client import MtopClient
from ..platform.session import (
    AccountSession,
    ConnectionState,
    Incoming,
    ReconnectPolicy,
    Reply,
    SendOutcome,
    Sent,
    SessionHooks,
    SessionOutcome,
    SessionStats,
    StateChange,
)
from ..protocol import BuyerMessage, ChatMessage, OrderEvent, OrderStatus, TextContent, now_ms, parse_cookie
from ..replies import (
    AIReplier,
    AIReplyError,
    ChatFacts,
    ReplyKind,
    ReplySettings,
    Rule,
    RuleIndex,
    TryResult,
    Turn,
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
    Direction,
    Inbound,
    InvalidValue,
    Message,
    Outbound,
    Store,
)
from ..store.accounts import ReplyConfig
from ..store.cluster import Fence, FencedOut
from .events import (
    AccountAdded,
    AuthExpired,
    ConnectionChanged,
    CookieUpdated,
    EventBus,
    LifecycleChanged,
    MessageIn,
    ReplyFailed,
    ReplyInterrupted,
    ReplySent,
    VerificationRequired,
)
from .notify import Notifier, NotifyOptions
from .orders import DeliveryOptions, OrderDesk
from .replier import AccountReplier, Decided

log = structlog.get_logger("xianyu_autoreply.engine")
T = TypeVar("T")


class Lifecycle(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    AUTH_EXPIRED = "auth_expired"
    ERROR = "error"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the engine knows about an account right now (the API's `/accounts/{id}/state`)."""

    account_id: str
    lifecycle: Lifecycle
    connection: str
    since_ms: int
    last_error: str | None
    reconnects: int
    messages_in: int
    replies_out: int
    crashes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


class _Runtime:
    """The in-memory half of one account."""

    def __init__(self, account_id: str, *, cookie: str, proxy: str | None, enabled: bool, version: int) -> None:
        self.account_id = account_id
        self.cookie = cookie
        self.proxy = proxy
        self.enabled = enabled
        self.version = version
        self.lock = asyncio.Lock()
        self.lifecycle = Lifecycle.STOPPED
        self.since_ms = now_ms()
        self.last_error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.session: AccountSession | None = None
        self.replier: AccountReplier | None = None
        self.crashes: deque[float] = deque()
        self.totals = SessionStats()
        self.items: OrderedDict[str, ChatFacts] = OrderedDict()

    def absorb(self, stats: SessionStats) -> None:
        """Fold a finished session's counters into the account's totals."""
        self.totals.reconnects += stats.reconnects
        self.totals.messages_in += stats.messages_in
        self.totals.replies_out += stats.replies_out

    def state(self) -> AccountState:
        live = self.session.stats if self.session is not None else SessionStats()
        connection = self.session.state.value if self.session is not None else ConnectionState.DISCONNECTED.value
        return AccountState(
            account_id=self.account_id,
            lifecycle=self.lifecycle,
            connection=connection,
            since_ms=self.since_ms,
            last_error=self.last_error,
            reconnects=self.totals.reconnects + live.reconnects,
            messages_in=self.totals.messages_in + live.messages_in,
            replies_out=self.totals.replies_out + live.replies_out,
            crashes=len(self.crashes),
        )


class AccountScheduler:
    """Runs every account of one store; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        mtop: MtopClient | None = None,
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
        self.mtop = mtop or MtopClient(
            mtop_url=settings.platform.mtop_url, passport_url=settings.platform.passport_url, outbound=self.outbound
        )
        self._limits = limits
        self._runtimes: dict[str, _Runtime] = {}
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
        # Orders and owner notifications (engine/orders.py, engine/notify.py): wired here and in `_new_session`.
        self.orders = OrderDesk(
            store=store,
            mtop=self.mtop,
            bus=self.bus,
            session_for=self.session,
            proxy_for=lambda account_id: rt.proxy if (rt := self._runtimes.get(account_id)) else None,
            fence_for=self.fence_for,
            options=self.options.delivery,
            outbound=self.outbound,
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
            rt = _Runtime(
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
        if self._owns_mtop:
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
            rt = _Runtime(account_id, cookie=cookie.strip(), proxy=proxy, enabled=enabled, version=account.version)
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
                rt.replier.update(settings=await self._reply_settings(account_id))
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
                rt.replier.update(settings=await self._reply_settings(account_id))
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
                rt = self._runtimes.get(secret.id)
                if rt is None:
                    rt = _Runtime(secret.id, cookie=secret.cookie, proxy=secret.proxy, enabled=False, version=0)
                    self._runtimes[secret.id] = rt
                changed = (rt.cookie, rt.proxy) != (secret.cookie, secret.proxy)
                rt.cookie, rt.proxy, rt.version = secret.cookie, secret.proxy, secret.version
                if rt.task is not None and (changed or not secret.enabled):
                    await self._halt(rt)
                rt.enabled = secret.enabled
                if rt.replier is not None:
                    rt.replier.update(
                        rules=await self._rules(secret.id), settings=await self._reply_settings(secret.id)
                    )
                if rt.enabled and rt.task is None and self.running:
                    self._launch(rt)

    async def send_manual(self, account_id: str, chat_id: str, to_user: str, text: str) -> Sent:
        """The seller answers by hand through the account's session; auto-replies in that chat pause."""
        rt = self._runtime(account_id)
        session = rt.session
        if session is None or not session.connected:
            raise InvalidValue(f"account {account_id!r} is not connected")
        if rt.replier is not None:
            rt.replier.pause_chat(chat_id)
        return await session.send(chat_id, to_user, Reply(text=text, source="manual"))

    async def try_reply(self, account_id: str, text: str, *, item_id: str | None = None) -> TryResult:
        """What the account would answer to `text` now (its current rules and settings), without sending.

        When the policy would ask the AI, the AI is asked (so the seller sees the real answer) and, should it
        fail, the fallback is shown with the reason.
        """
        rt = self._runtime(account_id)
        rules = rt.replier.rules if rt.replier is not None else await self._rules(account_id)
        settings = rt.replier.settings if rt.replier is not None else await self._reply_settings(account_id)
        result = try_reply(text, item_id=item_id, rules=rules, settings=settings)
        if result.ai_query is None:
            return result
        ai = AIReplier(
            settings.ai, account_name=settings.account_name, timeout_s=self.options.ai_timeout, outbound=self.outbound
        )
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
                rt = _Runtime(
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

    def _launch(self, rt: _Runtime) -> None:
        if not self._owned(rt.account_id):
            return  # scale-out: never a session for an account of a bucket this node does not hold
        rt.task = asyncio.get_running_loop().create_task(self._supervise(rt), name=f"account:{rt.account_id}")

    async def _supervise(self, rt: _Runtime) -> None:
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
                            rt.replier = await self._make_replier(rt)
                except Exception as exc:
                    if not await self._crashed(rt, exc):
                        return
                    continue
            session = self._new_session(rt)
            rt.session = session
            try:
                outcome = await session.run()
            except asyncio.CancelledError:
                await session.close()
                raise
            except Exception as exc:
                rt.absorb(session.stats)
                rt.session = None
                if not await self._crashed(rt, exc) or not self._owned(rt.account_id):
                    return
                continue
            rt.absorb(session.stats)
            rt.session = None
            if outcome is SessionOutcome.AUTH_EXPIRED:
                rt.last_error = session.stats.last_error
                self._set_lifecycle(rt, Lifecycle.AUTH_EXPIRED, "login expired: a new cookie is needed")
                self.bus.publish(AuthExpired(account_id=rt.account_id))
            return

    async def _crashed(self, rt: _Runtime, exc: Exception) -> bool:
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

    async def _halt(self, rt: _Runtime, *, timeout: float | None = None, drain: float | None = None) -> None:
        """Stop the account's session and supervisor; abandon them if they outlive the stop timeout.

        The session first lets the messages it is handling be answered (up to `drain` seconds): a pushed
        message is not pushed again, so one cut off here would never be answered.
        """
        timeout = self.options.stop_timeout if timeout is None else timeout
        drain = self.options.drain_timeout if drain is None else drain
        task, session = rt.task, rt.session
        rt.task = None
        if task is None:
            return
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close(timeout=drain + timeout, drain=drain)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            log.error("session did not stop in time; abandoned", account_id=rt.account_id)
        rt.session = None
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

    def _set_lifecycle(self, rt: _Runtime, lifecycle: Lifecycle, reason: str) -> None:
        if lifecycle is rt.lifecycle:
            return
        rt.lifecycle = lifecycle
        rt.since_ms = now_ms()
        self.bus.publish(LifecycleChanged(account_id=rt.account_id, lifecycle=lifecycle.value, reason=reason))

    # --- one session and its hooks --------------------------------------------------------------------------

    def _new_session(self, rt: _Runtime) -> AccountSession:
        account_id = rt.account_id
        replier = rt.replier
        assert replier is not None

        def on_state(change: StateChange) -> None:
            if change.state is ConnectionState.CONNECTED:
                self._set_lifecycle(rt, Lifecycle.RUNNING, change.reason)
                if rt.session is not None:
                    self._background(self._resume(rt, rt.session), name=f"resume:{account_id}")
            elif change.state is ConnectionState.RECONNECTING and rt.lifecycle is not Lifecycle.STARTING:
                rt.last_error = rt.session.stats.last_error if rt.session is not None else change.reason
                self._set_lifecycle(rt, Lifecycle.BACKOFF, change.reason)
            self.bus.publish(ConnectionChanged(account_id=account_id, state=change.state.value, reason=change.reason))

        async def record(admitted: Sequence[Incoming]) -> list[bool]:
            # Before the push is acknowledged: every item with a key in one group commit (store/writer.py).
            fresh = [True] * len(admitted)  # events nobody records (typing, notices) are handled as they come
            where = [(i, item) for i, incoming in enumerate(admitted) if (item := _inbound(incoming)) is not None]
            if where:
                try:
                    answers = await self.store.record_inbound(
                        account_id, [item for _, item in where], fence=self.fence_for(account_id)
                    )
                except FencedOut as exc:
                    log.warning("push left to the new owner", account_id=account_id, bucket=exc.fence.bucket)
                    raise NotRecorded(f"the lease of bucket {exc.fence.bucket} moved on") from exc
                for (i, _), new in zip(where, answers, strict=True):
                    fresh[i] = new
            for incoming, new in zip(admitted, fresh, strict=True):
                event = incoming.event
                if new and isinstance(event, ChatMessage):
                    self.bus.publish(
                        MessageIn(
                            account_id=account_id,
                            chat_id=event.chat_id,
                            message_id=event.message_id,
                            sender=event.sender_nick,
                            text=event.text,
                            own=not isinstance(event, BuyerMessage),
                        )
                    )
            return fresh

        async def on_sent(sent: Sent) -> None:
            text = sent.content.text if isinstance(sent.content, TextContent) else sent.content.url
            # Queued into the log's group commit, not awaited: `begin_reply` already made the reply exactly-once.
            self.store.log_writer.record_outbound(
                account_id,
                Outbound(
                    sent.uuid,
                    chat_id=sent.chat_id,
                    text=text,
                    created_ms=now_ms(),
                    content_type="text" if isinstance(sent.content, TextContent) else "image",
                    reply_source=sent.source or None,
                    reply_to=sent.in_reply_to,
                    status="sent" if sent.ok else "failed",
                ),
            )
            if sent.in_reply_to is not None:
                self.store.log_writer.mark_inbound(account_id, sent.in_reply_to, status=_ANSWERED[sent.outcome])
            self.bus.publish(
                (ReplySent if sent.ok else ReplyFailed)(
                    account_id=account_id,
                    chat_id=sent.chat_id,
                    text=text,
                    source=sent.source,
                    error=sent.error,
                    in_reply_to=sent.in_reply_to,
                )
            )

        async def on_cookie(cookie: str) -> None:
            # The platform refreshed a cookie value: keep it, so a restart logs in with the fresh one.
            try:
                account = await self.store.update_cookie(
                    account_id, cookie, actor="session", fence=self.fence_for(account_id)
                )
            except Exception as exc:
                log.warning("could not save a refreshed cookie", account_id=account_id, error=type(exc).__name__)
                return
            rt.cookie, rt.version = cookie, account.version

        async def on_incoming(incoming: Incoming) -> None:
            if isinstance(incoming.event, OrderEvent):
                await self.orders.on_event(account_id, incoming.event)
                if (key := incoming.key) is not None:
                    self.store.log_writer.mark_inbound(account_id, key, status="applied")

        async def on_verification(url: str | None) -> None:
            rt.last_error = "verification_required"
            self.bus.publish(VerificationRequired(account_id=account_id, url=url))

        hooks = SessionHooks(
            decide=replier.decide,
            on_state=on_state,
            on_sent=on_sent,
            on_cookie=on_cookie,
            record=record,
            on_verification=on_verification,
            on_incoming=on_incoming,
        )
        return AccountSession(
            account_id=account_id,
            cookie=rt.cookie,
            ws_url=self.settings.platform.ws_url,
            mtop=self.mtop,
            settings=self.settings.session,
            hooks=hooks,
            proxy=rt.proxy,
            limits=self._limits,
            policy=self.options.policy,
            outbound=self.outbound,
        )

    def _background(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _resume(self, rt: _Runtime, session: AccountSession) -> None:
        """Handle what the account recorded and never finished, once per row (see the module docstring).

        Runs after every connect. A row recorded before this resume began, not in flight in this session, and still
        open was left by a crash, a drain cut short or another node: `received` is handled now (or logged expired),
        `replying` may have reached the buyer and is reported as interrupted, never sent again.
        """
        account_id = rt.account_id
        started = datetime.now(UTC)  # rows recorded from now on are this session's own
        try:
            await session.recorded()  # a push re-sent on connect is recorded by now: new (ours) or seen (resumed)
            busy = session.in_flight()
            await self.store.log_writer.flush()  # the outcomes of what finished here are in the rows we read
            rows = await self.store.list_open_inbound(account_id, recorded_before=started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not look for unfinished messages", account_id=account_id, error=type(exc).__name__)
            return
        expire_ms = int(self.settings.session.message_expire * 1000)
        now = now_ms()
        counts: dict[str, int] = {}
        for row in rows:
            if row.message_id in busy:
                continue
            outcome = self._resume_row(account_id, session, row, now=now, expire_ms=expire_ms)
            counts[outcome] = counts.get(outcome, 0) + 1
        if counts:
            log.info("resumed unfinished messages", account_id=account_id, **counts)

    def _resume_row(self, account_id: str, session: AccountSession, row: Message, *, now: int, expire_ms: int) -> str:
        writer = self.store.log_writer
        if row.content_type == "order":
            event = _order_event(row)
            if event is None:
                writer.mark_inbound(account_id, row.message_id, status="ignored", reply_reason="unreadable")
                return "unreadable"
            session.resume(Incoming(event, now, resumed=True))
            return "orders"
        if row.status == "replying":
            reason = "interrupted while sending: it may have reached the buyer, so it is not sent again"
            writer.mark_inbound(account_id, row.message_id, status="interrupted", reply_reason=reason)
            log.warning("reply interrupted by a restart", account_id=account_id, message_id=row.message_id)
            self.bus.publish(
                ReplyInterrupted(account_id=account_id, chat_id=row.chat_id, message_id=row.message_id, text=row.text)
            )
            return "interrupted"
        if row.sender_id == session.seller_id:  # our echo or the seller typing elsewhere: nothing to answer now
            writer.mark_inbound(account_id, row.message_id, status="ignored", reply_reason="resumed_own_message")
            return "own"
        if now - row.created_ms > expire_ms:
            writer.mark_inbound(account_id, row.message_id, status="expired", reply_reason="expired_before_resume")
            return "expired"
        event = BuyerMessage(
            row.message_id,
            row.chat_id,
            row.sender_id or "",
            row.sender_nick or "",
            row.item_id,
            row.text,
            _content_type(row.content_type),
            row.created_ms,
        )
        session.resume(Incoming(event, now, resumed=True))
        return "messages"

    async def _make_replier(self, rt: _Runtime) -> AccountReplier:
        account_id = rt.account_id

        async def on_decision(decided: Decided) -> None:
            event = decided.incoming.event
            if isinstance(event, ChatMessage) and decided.reply is None:
                # Queued, not awaited: nothing is sent, so nothing waits for this to be durable.
                self.store.log_writer.mark_inbound(
                    account_id, event.message_id, status="ignored", reply_reason=decided.decision.reason.value
                )

        async def claim_reply(decided: Decided) -> bool:
            # Durable before the send: of a live and a resumed handler one sends, and a crash while sending
            # leaves `replying`, which the next resume reports as interrupted rather than answering twice.
            key = decided.incoming.key
            if key is None:
                return True
            try:
                return await self.store.begin_reply(
                    account_id,
                    key,
                    reply_source=decided.decision.source,
                    reply_reason=decided.decision.reason.value,
                    fence=self.fence_for(account_id),
                )
            except FencedOut:
                log.warning("reply left to the account's new owner", account_id=account_id)
                return False

        async def history(chat_id: str) -> list[Turn]:
            await self.store.log_writer.flush()  # the AI must see the replies still queued for the log
            messages = await self.store.list_messages(account_id, chat_id=chat_id, limit=21)
            seller = rt.session.seller_id if rt.session is not None else None
            turns = [
                Turn(m.text, from_buyer=m.direction is Direction.IN and m.sender_id != seller)
                for m in messages
                if m.text
            ]
            return turns[:-1]  # the current message is the query itself

        async def facts(event: BuyerMessage) -> ChatFacts:
            item_id = event.item_id or ""
            cached = rt.items.get(item_id)
            if cached is not None:
                return cached
            session = rt.session
            if session is None:
                return ChatFacts()
            detail = await self.mtop.item_detail(session.cookie_jar, item_id=item_id, proxy=rt.proxy)
            fact = ChatFacts(item_title=detail.title or None, item_price=_price(detail.price))
            rt.items[item_id] = fact
            while len(rt.items) > 256:
                rt.items.popitem(last=False)
            return fact

        preloaded = self._preloaded.pop(account_id, None)
        if preloaded is not None:
            rules, settings = RuleIndex.build(preloaded.rules), self._compose_settings(preloaded)
        else:
            rules, settings = await self._rules(account_id), await self._reply_settings(account_id)
        return AccountReplier(
            account_id=account_id,
            rules=rules,
            settings=settings,
            history=history,
            facts=facts,
            on_decision=on_decision,
            claim_reply=claim_reply,
            ai_factory=lambda s: AIReplier(
                s.ai, account_name=s.account_name, timeout_s=self.options.ai_timeout, outbound=self.outbound
            ),
        )

    async def _rules(self, account_id: str) -> RuleIndex:
        return RuleIndex.build(await self.store.get_rules(account_id))

    async def _reply_settings(self, account_id: str) -> ReplySettings:
        settings = await self.store.get_settings(account_id)
        ai = await self.store.get_ai_settings(account_id)
        key = await self.store.get_ai_api_key(account_id) if ai.has_api_key else None
        account = await self.store.get_account(account_id)
        return self._compose_settings(
            ReplyConfig(
                account_id=account_id,
                version=account.version,
                remark=account.remark,
                rules=[],
                settings=settings,
                ai=ai,
                ai_api_key=key,
            )
        )

    def _compose_settings(self, config: ReplyConfig) -> ReplySettings:
        """The replier's settings from what the store holds for the account."""
        return config.reply_settings(message_expire_seconds=self.settings.session.message_expire)

    def _runtime(self, account_id: str) -> _Runtime:
        rt = self._runtimes.get(account_id)
        if rt is None:
            raise AccountNotFound(account_id)
        return rt

    def _lock(self, account_id: str) -> asyncio.Lock:
        lock = self._locks.get(account_id)
        if lock is None:
            lock = self._locks[account_id] = asyncio.Lock()
        return lock


# What a send's outcome makes of the buyer message it answered.
_ANSWERED = {
    SendOutcome.CONFIRMED: "replied",
    SendOutcome.NOT_SENT: "failed",
    SendOutcome.UNCONFIRMED: "unconfirmed",
}


def _inbound(incoming: Incoming) -> Inbound | None:
    """The log row of an admitted event, or None for events that are not recorded (typing, notices)."""
    event, key = incoming.event, incoming.key
    if key is None:
        return None
    if isinstance(event, ChatMessage):
        return Inbound(
            key,
            event.chat_id,
            event.created_ms,
            event.text,
            str(event.content_type),
            event.sender_id,
            event.sender_nick,
            event.item_id,
            status="expired" if incoming.expired else "received",
        )
    if isinstance(event, OrderEvent):
        return Inbound(
            key,
            event.chat_id or "",
            event.created_ms or now_ms(),
            event.text,
            "order",
            event.buyer_id,
            None,
            event.item_id,
            event={"order_id": event.order_id, "status": event.status.value},
        )
    return None


def _order_event(row: Message) -> OrderEvent | None:
    """The order event a recorded order row stands for (to replay it), None if the row cannot say."""
    detail = row.event or {}
    try:
        status = OrderStatus(detail.get("status"))
    except ValueError:
        return None
    order_id = detail.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        return None
    return OrderEvent(
        order_id, status, row.chat_id or None, row.sender_id, row.item_id, row.text, row.message_id, row.created_ms
    )


def _content_type(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 1


def _price(value: str | None) -> Decimal | None:
    if not value:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None
