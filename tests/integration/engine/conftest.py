from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from xianyu_autoreply.config import Settings, load_settings
from xianyu_autoreply.engine.scheduler import AccountScheduler, EngineOptions
from xianyu_autoreply.platform.session import ReconnectPolicy
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import Store

from ...conftest import LOOPBACK_ONLY
from ...polling import eventually as eventually  # noqa: PLC0414  (re-exported to the suites that import it from here)

FAST_OPTIONS = EngineOptions(
    connect_rate=500.0,
    stop_timeout=5.0,
    crash_window=30.0,
    max_crashes=3,
    crash_backoff_base=0.05,
    crash_backoff_cap=0.2,
    ai_timeout=2.0,
    policy=ReconnectPolicy(base=0.05, cap=0.3, stable_after=1.0, risk_backoff=0.5),
)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator()
    await simulator.start(host="127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
def settings(sim: Simulator, tmp_path: Path, database_url: str) -> Settings:
    """Settings on the simulator, once per database backend (SQLite, and PostgreSQL when installed)."""
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        session={"heartbeat_interval": 0.5, "heartbeat_timeout": 1.5},
        outbound=LOOPBACK_ONLY,  # the simulator's AI, the webhook and notification receivers
    )


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    opened = await Store.open(settings)
    try:
        yield opened
    finally:
        await opened.close()


EngineFactory = Callable[..., Awaitable[AccountScheduler]]


@contextlib.asynccontextmanager
async def engines_on(store: Store, settings: Settings, default: EngineOptions) -> AsyncIterator[EngineFactory]:
    """A factory starting engines on `store` (with `default` options unless given others); all stopped at exit."""
    engines: list[AccountScheduler] = []

    async def make(options: EngineOptions = default) -> AccountScheduler:
        engine = AccountScheduler(store=store, settings=settings, options=options)
        await engine.start()
        engines.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in engines:
            if engine.running:
                await engine.stop()


@pytest.fixture
async def make_engine(store: Store, settings: Settings) -> AsyncIterator[EngineFactory]:
    """Start engines on the test's store; every one is stopped at the end."""
    async with engines_on(store, settings, FAST_OPTIONS) as make:
        yield make


@pytest.fixture
async def engine(make_engine: EngineFactory) -> AccountScheduler:
    return await make_engine()
