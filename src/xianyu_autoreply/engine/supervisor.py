"""Supervision: each enabled account's session and pipeline kept running, paced, restarted, parked, stopped.

A supervisor task per account runs its pipeline; a crash restarts it with exponential backoff, too many crashes in
a window park it in `error`, a lost login in `auth_expired`. Starts are paced engine-wide (`connect_rate`), so
thousands of accounts come up without a thundering herd. After every connect the account's unfinished messages
are resumed (engine/steps.py). The scheduler decides *what* runs; this module keeps it running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..platform.limits import ProcessLimits
from ..platform.values import ConnectionState, ReconnectPolicy, SessionOutcome, StateChange
from ..protocol import now_ms
from ..store.accounts import ReplyConfig
from .account import AccountRuntime, Lifecycle
from .events import AuthExpired, ConnectionChanged, EventBus, LifecycleChanged
from .notify import NotifyOptions
from .orders import DeliveryOptions
from .pipeline import AccountPipeline
from .wiring import AccountWiring

log = structlog.get_logger("xianyu_autoreply.engine")


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


class Supervisor:
    """Keeps the accounts it is given running; see the module docstring."""

    def __init__(
        self,
        *,
        options: EngineOptions,
        bus: EventBus,
        wiring: AccountWiring,
        lock: Callable[[str], asyncio.Lock],
        preloaded: dict[str, ReplyConfig],
        owned: Callable[[str], bool],
    ) -> None:
        """`preloaded` is the scheduler's map of bulk-read reply configs, each used once by an account's first
        replier; `lock` is the account's lock, under which a replier is made."""
        self._options = options
        self._bus = bus
        self._wiring = wiring
        self._lock = lock
        self._preloaded = preloaded
        self._owned = owned
        self.limits: ProcessLimits | None = None
        self._next_start = 0.0
        self._pace_lock = asyncio.Lock()
        self._chores: set[asyncio.Task[None]] = set()  # resumes after a connect

    def cancel_chores(self) -> None:
        for chore in list(self._chores):
            chore.cancel()

    def launch(self, rt: AccountRuntime) -> None:
        if not self._owned(rt.account_id):
            return  # scale-out: never a session for an account of a bucket this node does not hold
        rt.task = asyncio.get_running_loop().create_task(self._supervise(rt), name=f"account:{rt.account_id}")

    async def _supervise(self, rt: AccountRuntime) -> None:
        """Run the account's session; restart it after a crash with backoff; park it on auth loss or crash loops."""
        self.set_lifecycle(rt, Lifecycle.STARTING, "start")
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
                            rt.replier = await self._wiring.replier(rt, self._preloaded.pop(rt.account_id, None))
                except Exception as exc:
                    if not await self._crashed(rt, exc):
                        return
                    continue
            pipeline = self._wiring.pipeline(rt, limits=self.limits, on_state=functools.partial(self._on_state, rt))
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
                self.set_lifecycle(rt, Lifecycle.AUTH_EXPIRED, "login expired: a new cookie is needed")
                self._bus.publish(AuthExpired(account_id=rt.account_id))
            return

    async def _crashed(self, rt: AccountRuntime, exc: Exception) -> bool:
        """Record a crash; True to restart after the backoff, False when the account is parked in `error`."""
        now = time.monotonic()
        rt.crashes.append(now)
        while rt.crashes and now - rt.crashes[0] > self._options.crash_window:
            rt.crashes.popleft()
        rt.last_error = f"{type(exc).__name__}: {exc}"
        log.error("session crashed", account_id=rt.account_id, error=rt.last_error, crashes=len(rt.crashes))
        if len(rt.crashes) >= self._options.max_crashes:
            self.set_lifecycle(rt, Lifecycle.ERROR, rt.last_error)
            return False
        delay = min(self._options.crash_backoff_cap, self._options.crash_backoff_base * 2 ** (len(rt.crashes) - 1))
        self.set_lifecycle(rt, Lifecycle.BACKOFF, rt.last_error)
        await asyncio.sleep(delay)
        return True

    async def halt(self, rt: AccountRuntime, *, timeout: float | None = None, drain: float | None = None) -> None:
        """Stop the account's session and supervisor; abandon them if they outlive the stop timeout.

        The session first lets the messages it is handling be answered (up to `drain` seconds): a pushed
        message is not pushed again, so one cut off here would never be answered.
        """
        timeout = self._options.stop_timeout if timeout is None else timeout
        drain = self._options.drain_timeout if drain is None else drain
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
            self.set_lifecycle(rt, Lifecycle.STOPPED, "stopped")

    async def _pace(self) -> None:
        """Space session starts out to `connect_rate` per second across the whole engine."""
        async with self._pace_lock:
            now = time.monotonic()
            wait = self._next_start - now
            self._next_start = max(now, self._next_start) + 1.0 / self._options.connect_rate
        if wait > 0:
            await asyncio.sleep(wait)

    def set_lifecycle(self, rt: AccountRuntime, lifecycle: Lifecycle, reason: str) -> None:
        if lifecycle is rt.lifecycle:
            return
        rt.lifecycle = lifecycle
        rt.since_ms = now_ms()
        self._bus.publish(LifecycleChanged(account_id=rt.account_id, lifecycle=lifecycle.value, reason=reason))

    def _on_state(self, rt: AccountRuntime, change: StateChange) -> None:
        """The session's connection state, made the account's lifecycle; a connect resumes what was left."""
        if change.state is ConnectionState.CONNECTED:
            self.set_lifecycle(rt, Lifecycle.RUNNING, change.reason)
            if rt.pipeline is not None:
                self.background(self._resume(rt, rt.pipeline), name=f"resume:{rt.account_id}")
        elif change.state is ConnectionState.RECONNECTING and rt.lifecycle is not Lifecycle.STARTING:
            rt.last_error = rt.session.stats.last_error if rt.session is not None else change.reason
            self.set_lifecycle(rt, Lifecycle.BACKOFF, change.reason)
        self._bus.publish(ConnectionChanged(account_id=rt.account_id, state=change.state.value, reason=change.reason))

    def background(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
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
