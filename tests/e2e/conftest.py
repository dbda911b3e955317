"""Browser tests: the real app (run_server: uvicorn on loopback, engine, SQLite) on the simulator, driven by
Playwright with Debian's Chromium (`.ci/run` installs it; without it these tests skip, saying why).

Screenshots go to `$XAR_E2E_ARTIFACTS` (default: `<tmp>/xianyu-autoreply-e2e/`), one file per view.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from xianyu_autoreply.engine.scheduler import EngineOptions
from xianyu_autoreply.platform.session import ReconnectPolicy
from xianyu_autoreply.simulator import Simulator

from ..conftest import LOOPBACK_ONLY

CHROMIUM = Path(os.environ.get("XAR_E2E_CHROMIUM") or "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN_PASSWORD = "e2e-admin-password"
ARTIFACTS = Path(os.environ.get("XAR_E2E_ARTIFACTS") or Path(tempfile.gettempdir()) / "xianyu-autoreply-e2e")

NO_BROWSER = f"no browser: {CHROMIUM} is missing (apt-get install chromium; .ci/run does)"

HAVE_CHROMIUM = CHROMIUM.exists()

with contextlib.suppress(ImportError):  # the `test` extra installs it; without it the test modules skip
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

FAST = EngineOptions(
    connect_rate=500.0,
    stop_timeout=5.0,
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
async def server(sim: Simulator, tmp_path: Path) -> AsyncIterator[Any]:
    """The whole service as `serve` runs it (store, first admin, engine, uvicorn), on the simulator."""
    from xianyu_autoreply.api.server import run_server
    from xianyu_autoreply.config import load_settings

    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'data' / 'xianyu.db'}",
        host="127.0.0.1",
        port=0,
        admin_username="admin",
        admin_password=ADMIN_PASSWORD,
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        session={"heartbeat_interval": 1.0, "heartbeat_timeout": 3.0},
        outbound=LOOPBACK_ONLY,  # the simulator's AI
    )
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_server(settings, on_ready=ready.set_result, engine_options=FAST, handle_signals=False, log_level="warning")
    )
    done, _ = await asyncio.wait({ready, task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # it failed to start: show why
    running = ready.result()
    try:
        yield running
    finally:
        running.stop()
        await asyncio.wait_for(task, timeout=30)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium through Playwright (never a downloaded browser); the test skips without it."""
    if not HAVE_CHROMIUM:
        pytest.skip(NO_BROWSER)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser, server: Any) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile on the running app (the browser first: without one, nothing is started)."""
    ctx = await browser.new_context(base_url=server.url, locale="zh-CN", viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A tab whose console errors (a CSP violation, a script error, a missing file) fail the test; refused
    requests (403, 422) are expected answers, which the browser logs too."""
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    expected = re.compile(r"the server responded with a status of (403|422)")
    assert not [e for e in errors if not expected.search(e)], errors


async def log_in(page: Page, *, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    await page.goto("/")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/")


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


async def wait_live(page: Page) -> None:
    """Wait until the page's event stream is open (admin.js marks it), so what happens next is seen live."""
    await expect(page.locator("[sse-connect]").first).to_have_attribute("data-live", "open", timeout=15_000)
