"""Node: one of several workers on one PostgreSQL, running only the accounts of the buckets it leases (DESIGN §4).

Per node, four small loops around one `AccountScheduler`:
- leases: every third of the trust window (or at once on NOTIFY) renew all held buckets in one statement, claim a
  fair share of free or expired ones (`ClusterStore.claim`: `FOR UPDATE SKIP LOCKED`, rendezvous preference) and
  hand over the excess when a node joined; new buckets' accounts are loaded and started;
- watchdog: each bucket has a local trust deadline, the renewal's *send* time + TTL - margin (monotonic clock).
  Past it, the bucket's sessions are stopped, whether or not the database could be reached: the lease in the
  database cannot have expired yet, so no other node can run them before they stop;
- commands: operations sent by API nodes (`send_command`) are taken from the `commands` table (woken by NOTIFY,
  polled as a fallback) and applied through the scheduler, so they keep its atomicity (database first);
- listen: one asyncpg connection LISTENs for lease and command notifications.
Every write a session makes on the account's behalf carries the bucket's `Fence`, so even a node paused past its
deadline (SIGSTOP, a long GC, a partition) cannot answer, deliver or save a cookie after losing the lease.
On SIGTERM (and when handing buckets to a newcomer) the sessions first answer the messages they are handling, by
the trust deadline at the latest, with their fences still valid; then they close, the node releases the buckets and
NOTIFYs peers, who claim them at once.
On SQLite the same code runs as one node owning every bucket (no NOTIFY: the loops poll).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from .. import __version__
from ..config import ClusterSettings, Settings
from ..platform.mtop_client import MtopClient
from ..replies import rule_from_data
from ..store import AccountSettings, Database, Store, StoreError
from ..store.cluster import (
    COMMANDS_CHANNEL,
    LEASES_CHANNEL,
    ClusterStore,
    Command,
    Fence,
    bucket_of,
)
from .events import EventBus
from .scheduler import AccountScheduler, EngineOptions

log = structlog.get_logger("xianyu_autoreply.cluster")

COMMAND_KINDS = frozenset(
    {"add", "remove", "update_cookie", "set_enabled", "update_proxy", "update_account", "set_rules", "set_settings",
     "reload"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Lease timing of one node; `from_settings` reads XAR_CLUSTER__*."""

    node_id: str
    buckets: int = 1024
    lease_ttl: float = 15.0
    lease_margin: float = 3.0
    command_poll: float = 5.0
    settle: float = 1.0  # before the first claim, so that nodes started together see each other

    @classmethod
    def from_settings(cls, cluster: ClusterSettings) -> NodeOptions:
        node_id = cluster.node_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        return cls(
            node_id=node_id,
            buckets=cluster.buckets,
            lease_ttl=cluster.lease_ttl,
            lease_margin=cluster.lease_margin,
            command_poll=cluster.command_poll,
            settle=min(1.0, cluster.lease_ttl / 3),
        )

    @property
    def renew_every(self) -> float:
        """A third of the trust window: two renewals in a row may be late or fail before sessions must stop."""
        return (self.lease_ttl - self.lease_margin) / 3

    @property
    def live_within(self) -> float:
        """A node silent longer than this leaves the fair share (it renews every TTL/3)."""
        return self.lease_ttl * 2 / 3


class Node:
    """A worker node: leases buckets and runs their accounts; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        options: NodeOptions | None = None,
        engine_options: EngineOptions | None = None,
        mtop: MtopClient | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.store = store
        self.options = options or NodeOptions.from_settings(settings.cluster)
        self.node_id = self.options.node_id
        self.cluster = ClusterStore(store.db, store.box)  # the main loop's: commands, leaving
        self.scheduler = AccountScheduler(
            store=store,
            settings=settings,
            mtop=mtop,
            bus=bus,
            options=engine_options,
            owns=self.owns,
            fence=self.fence,
        )
        # Shared by the main loop (reads: owns, fence, commands) and the keeper thread (writes).
        self._state = threading.Lock()
        self._held: dict[int, int] = {}  # bucket -> epoch, trusted until its deadline
        self._deadline: dict[int, float] = {}  # bucket -> monotonic time by which its sessions must be stopped
        self._ready: set[int] = set()  # held buckets whose accounts are loaded: their commands may run
        self._last_epoch: dict[int, int] = {}
        # Buckets given up (handover, SIGTERM) whose sessions are still answering the messages in flight: no
        # session may start for them, but those writes keep a valid fence until the drain ends or the deadline.
        self._leaving: dict[int, tuple[int, float]] = {}  # bucket -> (epoch, deadline)
        self.gained_at: dict[int, float] = {}  # bucket -> monotonic time it was last claimed (tests, benches)
        self._main: asyncio.AbstractEventLoop | None = None
        self._command_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._thread: threading.Thread | None = None
        self._keeper_loop: asyncio.AbstractEventLoop | None = None
        self._keeper_stop: asyncio.Event | None = None
        self._keeper_up = threading.Event()
        self._lease_wake = asyncio.Event()  # replaced in the keeper's loop
        self._background: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._rounds = 0

    # --- what the scheduler asks (main loop) ------------------------------------------------------------------

    def bucket(self, account_id: str) -> int:
        return bucket_of(account_id, self.options.buckets)

    def owns(self, account_id: str) -> bool:
        """Whether this node may run the account now (its bucket is held and trusted)."""
        return self.bucket(account_id) in self._held

    def fence(self, account_id: str) -> Fence:
        """The lease proof of the account's writes; for a bucket not held, an epoch the database refuses."""
        bucket = self.bucket(account_id)
        with self._state:
            epoch = self._held.get(bucket)
            if epoch is None:
                epoch = self._leaving[bucket][0] if bucket in self._leaving else -1 - self._last_epoch.get(bucket, 0)
        return Fence(node_id=self.node_id, bucket=bucket, epoch=epoch)

    @property
    def held(self) -> dict[int, int]:
        """Buckets held now, with their epochs."""
        with self._state:
            return dict(self._held)

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register, start the (empty) scheduler, the command loop and the lease keeper thread."""
        self._main = asyncio.get_running_loop()
        await self.cluster.ensure_buckets(self.options.buckets)
        await self.cluster.register(self.node_id, version=__version__)
        await self.scheduler.start()
        self._tasks = [asyncio.create_task(self._command_loop(), name="node:commands")]
        self._thread = threading.Thread(target=self._keep, name=f"lease-keeper:{self.node_id}", daemon=True)
        self._thread.start()
        log.info("node started", node_id=self.node_id, buckets=self.options.buckets, ttl=self.options.lease_ttl)

    async def stop(self, *, release: bool = True) -> None:
        """Stop every session, then (with `release`) give the buckets up and NOTIFY peers: a fast handover."""
        if self._stopped:
            return
        self._stopped = True
        began = time.monotonic()
        if self._thread is not None:
            await asyncio.to_thread(self._keeper_up.wait, 10)
            if self._keeper_loop is not None and self._keeper_stop is not None:
                self._keeper_loop.call_soon_threadsafe(self._keeper_stop.set)
            await asyncio.to_thread(self._thread.join, 15)
            self._thread = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        with self._state:
            # From here `_launch` refuses every account; fences stay valid while the sessions drain.
            for bucket, epoch in self._held.items():
                self._leaving[bucket] = (epoch, self._deadline.get(bucket, began))
            until = min((deadline for _, deadline in self._leaving.values()), default=began)
            self._held.clear()
            self._deadline.clear()
            self._ready.clear()
        keeper_s = time.monotonic() - began
        # Nothing renews now: the messages in flight are answered before the earliest trust deadline, and the
        # sockets closed within the margin after it, so before any lease could pass to another node.
        await self.scheduler.detach(self.scheduler.account_ids(), timeout=self._stop_timeout, drain=self._drain(until))
        with self._state:
            self._leaving.clear()  # every fence is stale
        await self.scheduler.stop()
        sessions_s = time.monotonic() - began - keeper_s
        if release:
            try:
                released = await self.cluster.leave(self.node_id)
                log.info(
                    "node left",
                    node_id=self.node_id,
                    released=released,
                    keeper_s=round(keeper_s, 2),
                    sessions_s=round(sessions_s, 2),
                )
            except StoreError as exc:  # the leases expire on their own
                log.warning("could not release buckets", node_id=self.node_id, error=str(exc))

    # --- the lease keeper: its own thread, event loop and connections -----------------------------------------
    # A node with hundreds of sessions has a busy event loop; a renewal queued behind their work would make the
    # node give up healthy leases. The keeper only touches the database and the lease state; the scheduler is
    # always driven on the main loop (`_on_main`).

    def _keep(self) -> None:
        asyncio.run(self._keeper_main())

    async def _keeper_main(self) -> None:
        self._keeper_loop = asyncio.get_running_loop()
        self._keeper_stop = asyncio.Event()
        self._lease_wake = asyncio.Event()
        db = Database(self.store.db.url, pool_size=2, max_overflow=2)
        keeper = ClusterStore(db, self.store.box)
        loops = [self._lease_loop(keeper), self._watchdog()]
        if db.dialect == "postgresql":
            loops.append(self._listen_loop(db))
        tasks = [asyncio.create_task(loop) for loop in loops]
        self._keeper_up.set()
        try:
            await self._keeper_stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await db.close()

    def _on_main(self, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
        assert self._main is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._main)
        future.add_done_callback(_log_failure)
        return future

    async def _lease_loop(self, keeper: ClusterStore) -> None:
        await asyncio.sleep(self.options.settle)
        while True:
            wait = self.options.renew_every
            try:
                wait = await self._round(keeper)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database away: retry soon; the watchdog stops sessions at the deadline
                log.warning("lease round failed", node_id=self.node_id, error=f"{type(exc).__name__}: {exc}")
                wait = min(1.0, self.options.renew_every)
            self._lease_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wait)):
                    await self._lease_wake.wait()

    async def _round(self, keeper: ClusterStore) -> float:
        """Renew, drop what was lost, claim, hand over; returns how long to sleep before the next round."""
        opts = self.options
        started = time.monotonic()
        held = self.held
        renewed = await keeper.renew(self.node_id, held, ttl=opts.lease_ttl)
        deadline = started + opts.lease_ttl - opts.lease_margin  # from the send time: the database's expiry is later
        with self._state:
            for bucket, epoch in renewed.items():
                if self._held.get(bucket) == epoch:
                    self._deadline[bucket] = deadline
        lost = [b for b, epoch in held.items() if renewed.get(b) != epoch]
        if lost:
            log.warning("buckets lost", node_id=self.node_id, count=len(lost))
            self._drop(lost)

        sent = time.monotonic()
        result = await keeper.claim(self.node_id, ttl=opts.lease_ttl, live_within=opts.live_within)
        if result.claimed:
            self._gain(result.claimed, deadline=sent + opts.lease_ttl - opts.lease_margin)
        if result.shed:
            log.info("handing buckets over", node_id=self.node_id, count=len(result.shed))
            stopped = self._drop(result.shed, drain=True)
            # Released only once their sessions stopped; meanwhile the leases are simply not renewed.
            self._spawn(self._release_when(stopped, keeper, result.shed))
        self._rounds += 1
        if self._rounds % 500 == 0:  # housekeeping: rows of nodes that died without leaving
            await keeper.forget_nodes(silent_for=max(3600.0, 10 * opts.lease_ttl))
        took = time.monotonic() - started
        if took > opts.renew_every / 2:  # the trust window shrinks by this much: a sign of an overloaded node
            log.warning("slow lease round", node_id=self.node_id, seconds=round(took, 2))
        wait = opts.renew_every
        if result.next_expiry_in is not None:
            wait = min(wait, result.next_expiry_in + 0.05)  # claim a dead node's buckets as soon as they expire
        return wait

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_when(
        self, stopped: concurrent.futures.Future[None], keeper: ClusterStore, buckets: list[int]
    ) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(stopped)
        await keeper.release(self.node_id, buckets)

    def _gain(self, claimed: dict[int, int], *, deadline: float) -> None:
        now = time.monotonic()
        with self._state:
            for bucket, epoch in claimed.items():
                self._held[bucket] = epoch
                self._deadline[bucket] = deadline
                self.gained_at[bucket] = now
        self._on_main(self._attach(list(claimed)))

    def _drop(self, buckets: Collection[int], *, drain: bool = False) -> concurrent.futures.Future[None]:
        """Forget buckets at once (nothing restarts) and stop their sessions on the main loop.

        Fences go stale at once, or with `drain` (a handover: the lease is still ours) only once the sessions
        answered the messages in flight, by the bucket's trust deadline at the latest.
        """
        until: float | None = None
        with self._state:
            gone = {b for b in buckets if b in self._held}
            for bucket in gone:
                epoch, deadline = self._held.pop(bucket), self._deadline.pop(bucket, 0.0)
                self._ready.discard(bucket)
                if drain:
                    self._leaving[bucket] = (epoch, deadline)
                    until = deadline if until is None else min(until, deadline)
                else:
                    self._last_epoch[bucket] = epoch
        if not gone:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        return self._on_main(self._detach(gone, drain=self._drain(until) if until is not None else 0.0))

    def _drain(self, until: float) -> float:
        """Seconds the sessions may spend answering messages in flight: up to the deadline, at most the engine's."""
        return max(0.0, min(self.scheduler.options.drain_timeout, until - time.monotonic()))

    def _forget_leaving(self, buckets: Collection[int]) -> None:
        with self._state:
            for bucket in buckets:
                if bucket in self._leaving:
                    self._last_epoch[bucket] = self._leaving.pop(bucket)[0]

    async def _watchdog(self) -> None:
        """Stop a bucket's sessions at its trust deadline, whatever the database says (or cannot say)."""
        while True:
            now = time.monotonic()
            with self._state:
                overdue = [b for b, deadline in self._deadline.items() if deadline <= now]
                leaving = [b for b, (_, deadline) in self._leaving.items() if deadline <= now]
                deadlines = [*self._deadline.values(), *(deadline for _, deadline in self._leaving.values())]
                earliest = min(deadlines, default=now + self.options.renew_every)
            if leaving:  # still draining at the deadline: their last writes are refused from now on
                self._forget_leaving(leaving)
            if overdue:
                log.warning("lease not renewed in time: sessions stop", node_id=self.node_id, count=len(overdue))
                self._drop(overdue)
                continue
            await asyncio.sleep(max(0.01, min(earliest - now, self.options.renew_every)))

    # --- the scheduler side of gaining and losing (main loop) -------------------------------------------------

    async def _attach(self, buckets: list[int]) -> None:
        ids = await self.cluster.account_ids_in(buckets, count=self.options.buckets)
        started = await self.scheduler.attach(ids)
        stale = [a for a in ids if not self.owns(a)]  # lost again while loading
        if stale:
            await self.scheduler.detach(stale, timeout=self._stop_timeout)
        with self._state:
            self._ready.update(b for b in buckets if b in self._held)
            held = len(self._held)
        self._command_wake.set()
        log.info("buckets claimed", node_id=self.node_id, count=len(buckets), accounts=started, held=held)

    async def _detach(self, buckets: set[int], *, drain: float = 0.0) -> None:
        ids = [a for a in self.scheduler.account_ids() if self.bucket(a) in buckets]
        try:
            await self.scheduler.detach(ids, timeout=self._stop_timeout, drain=drain)
        finally:
            self._forget_leaving(buckets)

    @property
    def _stop_timeout(self) -> float:
        return max(0.1, min(self.scheduler.options.stop_timeout, self.options.lease_margin / 2))

    # --- commands ---------------------------------------------------------------------------------------------

    async def _command_loop(self) -> None:
        while True:
            more = False
            try:
                with self._state:
                    ready = sorted(self._ready)
                commands = await self.cluster.take(self.node_id, ready, limit=100)
                for command in commands:
                    if command.bucket not in self._ready:
                        continue  # lost meanwhile: the next owner takes it again
                    error = await self.apply(command)
                    await self.cluster.finish(command.id, self.node_id, error=error)
                more = len(commands) == 100
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("command round failed", node_id=self.node_id, error=f"{type(exc).__name__}: {exc}")
            if more:
                continue
            self._command_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.command_poll):
                    await self._command_wake.wait()

    async def apply(self, command: Command) -> str | None:
        """Run one command through the scheduler (same locks and write-through as on one node); its error text."""
        s, p, account_id = self.scheduler, command.payload, command.account_id
        actor = str(p.get("actor", "api"))
        try:
            match command.kind:
                case "add":
                    await s.add(
                        account_id,
                        p["cookie"],
                        owner=p.get("owner"),
                        enabled=bool(p.get("enabled", True)),
                        remark=str(p.get("remark", "")),
                        proxy=p.get("proxy"),
                        actor=actor,
                    )
                case "remove":
                    await s.remove(account_id, actor=actor)
                case "update_cookie":
                    await s.update_cookie(account_id, p["cookie"], actor=actor)
                case "set_enabled":
                    await s.set_enabled(account_id, bool(p["enabled"]), actor=actor)
                case "update_proxy":
                    await s.update_proxy(account_id, p.get("proxy"), actor=actor)
                case "update_account":
                    await s.update_account(account_id, actor=actor, **p["fields"])
                case "set_rules":
                    await s.set_rules(account_id, [rule_from_data(rule) for rule in p["rules"]], actor=actor)
                case "set_settings":
                    await s.set_settings(account_id, AccountSettings(**p["settings"]), actor=actor)
                case "reload":
                    await s.reload(account_id)
                case _:
                    return f"unknown command kind {command.kind!r}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("command failed", command_id=command.id, kind=command.kind, error=type(exc).__name__)
            return f"{type(exc).__name__}: {exc}"
        return None

    # --- LISTEN -----------------------------------------------------------------------------------------------

    async def _listen_loop(self, db: Database) -> None:
        """Keep one LISTEN connection (keeper thread); after each (re)connect both loops run once, in case a
        NOTIFY was missed."""
        import asyncpg

        dsn = db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        main = self._main
        assert main is not None

        def on_lease(*_: Any) -> None:
            self._lease_wake.set()

        def on_command(*_: Any) -> None:
            main.call_soon_threadsafe(self._command_wake.set)

        while True:
            connection = None
            try:
                connection = await asyncpg.connect(dsn, timeout=10)
                await connection.add_listener(LEASES_CHANNEL, on_lease)
                await connection.add_listener(COMMANDS_CHANNEL, on_command)
                on_lease()
                on_command()
                while not connection.is_closed():
                    await asyncio.sleep(self.options.renew_every)
                    await connection.execute("SELECT 1", timeout=self.options.renew_every)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost", node_id=self.node_id, error=type(exc).__name__)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 2)
            await asyncio.sleep(1.0)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("node task failed", error=repr(future.exception()))


# --- for API nodes ----------------------------------------------------------------------------------------------


async def send_command(
    store: Store, account_id: str, kind: str, payload: dict[str, Any] | None = None, *, buckets: int | None = None
) -> int:
    """Queue an operation for the worker that owns the account (it applies it through its scheduler).

    Kinds and payloads: add {cookie, owner?, enabled?, remark?, proxy?}; remove {}; update_cookie {cookie};
    set_enabled {enabled}; update_proxy {proxy}; update_account {fields}; set_rules {rules: [Rule fields]};
    set_settings {settings: AccountSettings fields}; reload {} (after writing the database directly).
    Every kind also takes `actor`. The payload is sealed with the secret box. Returns the command id for
    `wait_command`. A command for a bucket no worker holds waits in the table until one claims it.
    """
    if kind not in COMMAND_KINDS:
        raise ValueError(f"unknown command kind {kind!r}; one of {sorted(COMMAND_KINDS)}")
    cluster = ClusterStore(store.db, store.box)
    count = buckets or await cluster.bucket_count() or ClusterSettings().buckets
    return await cluster.enqueue(account_id, kind, payload or {}, bucket=bucket_of(account_id, count))


async def wait_command(store: Store, command_id: int, *, timeout: float = 30.0, interval: float = 0.1) -> Command:
    """Poll until the command is done (`error` None: applied); raises TimeoutError past `timeout`."""
    cluster = ClusterStore(store.db, store.box)
    async with asyncio.timeout(timeout):
        while True:
            command = await cluster.get_command(command_id)
            if command.done_at is not None:
                return command
            await asyncio.sleep(interval)


async def owner_of_account(store: Store, account_id: str) -> str | None:
    """The node that runs the account now (None: nobody holds its bucket; on a single node, also None)."""
    cluster = ClusterStore(store.db, store.box)
    count = await cluster.bucket_count()
    if not count:
        return None
    return await cluster.owner_of(bucket_of(account_id, count))
