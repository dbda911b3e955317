"""Prometheus metrics, read from the live engine at scrape time (a custom Collector: nothing to keep in step).

The engine already counts per account (messages in, replies out, reconnects); summing them when scraped means
the numbers cannot drift from what `/accounts/{id}/state` shows. Per-account labels are left out on purpose:
thousands of accounts would make thousands of series. Reply latency and replies by source are measured here
from the engine's events (`message.in` -> `reply.sent`) by a task `run_server` starts; the database round trip
is measured by the `/metrics` route at each scrape.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..engine.events import Event, EventBus, MessageIn, ReplySent
from ..engine.scheduler import AccountScheduler, Lifecycle

CONNECTION_STATES = ("disconnected", "connecting", "connected", "reconnecting", "failed", "closed")


class EngineCollector(Collector):
    """Accounts by lifecycle, sessions by connection state, and the engine's message counters."""

    def __init__(self, engine: AccountScheduler | None) -> None:
        self.engine = engine
        self.db_ping_seconds: float | None = None  # measured by the /metrics route just before collecting

    def collect(self) -> Iterator[Metric]:
        if self.db_ping_seconds is not None:
            yield GaugeMetricFamily(
                "xar_db_ping_seconds",
                "Round trip of a trivial database query at scrape time",
                value=self.db_ping_seconds,
            )
        states = self.engine.states() if self.engine is not None else []
        running = GaugeMetricFamily("xar_engine_running", "1 when this process runs the account engine")
        running.add_metric([], 1.0 if self.engine is not None and self.engine.running else 0.0)
        yield running

        by_lifecycle = Counter(s.lifecycle.value for s in states)
        accounts = GaugeMetricFamily("xar_accounts", "Accounts by lifecycle state", labels=["lifecycle"])
        for lifecycle in Lifecycle:
            if lifecycle is not Lifecycle.DELETED:
                accounts.add_metric([lifecycle.value], by_lifecycle.get(lifecycle.value, 0))
        yield accounts

        by_connection = Counter(s.connection for s in states)
        connections = GaugeMetricFamily("xar_connections", "Account sessions by connection state", labels=["state"])
        for state in sorted(set(CONNECTION_STATES) | set(by_connection)):
            connections.add_metric([state], by_connection.get(state, 0))
        yield connections

        yield CounterMetricFamily(
            "xar_messages_in", "Chat messages received by all accounts", value=sum(s.messages_in for s in states)
        )
        yield CounterMetricFamily(
            "xar_replies_out", "Replies sent by all accounts", value=sum(s.replies_out for s in states)
        )
        yield CounterMetricFamily(
            "xar_reconnects", "Session reconnects of all accounts", value=sum(s.reconnects for s in states)
        )
        yield GaugeMetricFamily(
            "xar_session_crashes_recent",
            "Session crashes within the engine's crash window, all accounts",
            value=sum(s.crashes for s in states),
        )


class ReplyMetrics:
    """From the engine's events: seconds from a buyer message's arrival to its reply's confirmed send, and
    replies sent by source (`rule`, `default`, `ai`, `manual`, ...; a rule's id is left out of the label).

    Run `watch(bus)` as a task beside the engine; arrivals waiting for a reply are bounded (oldest forgotten).
    """

    def __init__(self, registry: CollectorRegistry, *, pending_limit: int = 10_000) -> None:
        self.latency = Histogram(
            "xar_reply_latency_seconds",
            "Buyer message arrival to confirmed reply",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=registry,
        )
        self.by_source = PromCounter(
            "xar_replies_sent_by_source",
            "Replies confirmed by the platform since start, by source",
            ["source"],
            registry=registry,
        )
        self._arrived: OrderedDict[tuple[str | None, str], int] = OrderedDict()
        self._limit = pending_limit

    async def watch(self, bus: EventBus) -> None:
        with bus.listening(types=(MessageIn, ReplySent), size=10_000) as subscription:
            while True:
                self.observe(await subscription.get())

    def observe(self, event: Event) -> None:
        if isinstance(event, MessageIn) and not event.own:
            self._arrived[(event.account_id, event.message_id)] = event.at_ms
            while len(self._arrived) > self._limit:
                self._arrived.popitem(last=False)
        elif isinstance(event, ReplySent):
            source = (event.source or "unknown").split(":", 1)[0]
            self.by_source.labels(source=source).inc()
            if event.in_reply_to:
                arrived = self._arrived.pop((event.account_id, event.in_reply_to), None)
                if arrived is not None:
                    self.latency.observe(max(0, event.at_ms - arrived) / 1000)


class Metrics:
    """The app's metrics: a registry of its own (two apps in one process never collide) and its collectors."""

    def __init__(self, engine: AccountScheduler | None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.engine = EngineCollector(engine)
        self.registry.register(self.engine)
        self.replies = ReplyMetrics(self.registry)
        self._bus = engine.bus if engine is not None else None
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin measuring reply latency (needs a running loop; idempotent; no-op without an engine)."""
        if self._bus is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self.replies.watch(self._bus))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of the registry."""
    return generate_latest(registry)
