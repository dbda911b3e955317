"""`run_server`: the whole service in one coroutine — store, first admin, engine, HTTP — and its clean shutdown.

Used by `xianyu-autoreply serve` and (with the simulator beside it) by `demo`. The order matters:
start: open the store (migrating it), create the first admin, start the engine, then listen;
stop (SIGINT/SIGTERM or `RunningServer.stop()`): end event streams, stop listening and let requests finish, stop
the engine (every session closes), close the store. A second SIGINT skips waiting for open requests.

Signal handling lives here, not in uvicorn: uvicorn would re-raise the signal after serving, which would cut the
engine's shutdown short.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import signal
import socket
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import Settings
from ..engine.gc_tuning import freeze_long_lived
from ..engine.scheduler import AccountScheduler, EngineOptions
from ..store import Store
from .app import create_app
from .auth import bootstrap_admin

__all__ = ["RunningServer", "run_server"]


@dataclass(frozen=True, slots=True)
class RunningServer:
    """What `on_ready` receives once the server listens."""

    url: str  # e.g. http://127.0.0.1:8080 (the real port when XAR_PORT=0)
    host: str
    port: int
    app: FastAPI
    store: Store
    engine: AccountScheduler | None
    settings: Settings
    admin_password: str | None  # generated at this start (no XAR_ADMIN_PASSWORD, no user yet); shown once
    stop: Callable[[], None]  # ask the server to shut down, as SIGTERM does


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # run_server handles the signals (see the module docstring).
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port; a busy port raises OSError here (uvicorn would sys.exit)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


async def _start_engine(engine: AccountScheduler, store: Store, console: Console) -> None:
    """Start every enabled account behind a progress bar (thousands take a while at the bounded connect rate)."""
    total = len(await store.list_accounts())
    if not total:
        await engine.start()
        return
    columns = (TextColumn("starting accounts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("accounts", total=total)

        def advance(done: int, of: int) -> None:
            progress.update(task, completed=done, total=of)

        await engine.start(progress=advance)
    freeze_long_lived()  # full GC passes then skip the start-up state (engine/gc_tuning.py)
    console.print(f"engine: {total} account(s) loaded")


async def run_server(
    settings: Settings,
    *,
    engine_enabled: bool = True,
    on_ready: Callable[[RunningServer], Awaitable[None] | None] | None = None,
    engine_options: EngineOptions | None = None,
    handle_signals: bool = True,
    log_level: str = "info",
    console: Console | None = None,
) -> None:
    """Serve the API and web admin on XAR_HOST:XAR_PORT with the engine (unless `engine_enabled=False`)
    until SIGINT/SIGTERM or `RunningServer.stop()`, then shut everything down in order.

    `on_ready` (sync or async) is called once the port listens, with the URL, app, store, engine and the admin
    password if one was generated. Raises OSError when the port cannot be bound (after closing the store).
    Keyword arguments beyond `engine_enabled` and `on_ready` are for tests and embedding (the demo).
    """
    out = console or Console(stderr=True)
    store = await Store.open(settings)
    engine: AccountScheduler | None = None
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    sock: socket.socket | None = None
    app: FastAPI | None = None
    try:
        generated = await bootstrap_admin(store, settings)
        if generated is not None:
            out.print(
                f"[bold]first admin created[/bold]: username [cyan]{settings.admin_username}[/cyan] password "
                f"[cyan]{generated}[/cyan]\n(shown only this once; set XAR_ADMIN_PASSWORD to choose it)",
                highlight=False,
            )
        sock = _bind(settings.host, settings.port)
        if engine_enabled:
            engine = AccountScheduler(store=store, settings=settings, options=engine_options)
            await _start_engine(engine, store, out)
        app = served = create_app(settings, store=store, engine=engine)
        served.state.metrics.start()
        config = uvicorn.Config(
            served,
            log_level=log_level,
            access_log=log_level == "debug",
            timeout_graceful_shutdown=5,
            lifespan="off",
            server_header=False,
        )
        server = _Server(config)

        def stop() -> None:
            if server.should_exit:
                server.force_exit = True  # asked twice: do not wait for open requests
            served.state.stopping.set()
            server.should_exit = True

        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, stop)
                    installed.append(sig)

        serving = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        listening = asyncio.ensure_future(server.listening.wait())
        await asyncio.wait({listening, serving}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if server.started and on_ready is not None:
            port = sock.getsockname()[1]
            ready = RunningServer(
                url=_url(settings.host, port),
                host=settings.host,
                port=port,
                app=served,
                store=store,
                engine=engine,
                settings=settings,
                admin_password=generated,
                stop=stop,
            )
            try:
                result: Any = on_ready(ready)
                if inspect.isawaitable(result):
                    await result
            except BaseException:
                stop()
                await serving
                raise
        await serving
    finally:
        if app is not None:
            await app.state.metrics.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        if sock is not None:
            sock.close()
        if engine is not None:
            await engine.stop()
        await store.close()
