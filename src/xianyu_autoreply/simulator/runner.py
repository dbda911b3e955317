"""`run_simulator`: the simulator as a foreground program (the `xianyu-autoreply simulator` command)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from rich.console import Console
from rich.table import Table

from .app import Simulator


def run_simulator(host: str, port: int) -> None:
    """Serve the platform on `host:port` until Ctrl-C or SIGTERM, after printing its URLs."""
    with contextlib.suppress(KeyboardInterrupt):  # where signal handlers are unavailable, Ctrl-C lands here
        asyncio.run(_serve(host, port))


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sim = Simulator()
    await sim.start(host, port)
    console = Console()
    try:
        console.print(_urls_table(sim))
        console.print(
            f'Create a seller:  curl -s -XPOST {sim.control_url}sellers -d \'{{"nick": "my shop"}}\'\n'
            "Press Ctrl-C to stop.",
            highlight=False,
            soft_wrap=True,
        )
        await stop.wait()
    finally:
        await sim.stop()
        console.print("simulator stopped")


def _urls_table(sim: Simulator) -> Table:
    table = Table(title="xianyu-autoreply platform simulator", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("IM WebSocket", sim.ws_url)
    table.add_row("MTOP gateway", sim.mtop_url)
    table.add_row("passport", sim.passport_url)
    table.add_row("OpenAI-compatible", sim.openai_url)
    table.add_row("control API", sim.control_url)
    return table
