"""A steady load of buyer messages generated inside the simulator, for benchmarks.

Driving the load from the platform side keeps the engine process under test free of load-generator work, so
its CPU and memory figures are its own. Messages are spread over the given (or all registered) sellers, each to
a new chat, at a fixed rate with catch-up: a late tick sends what is due, never a burst bigger than one second.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadRun:
    rate: float
    seconds: float
    sellers: Sequence[str]
    sent: int = 0
    skipped: int = 0  # due messages for sellers nobody was connected for
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def to_json(self) -> dict[str, Any]:
        elapsed = (self.finished or time.monotonic()) - self.started
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "sellers": len(self.sellers),
            "sent": self.sent,
            "skipped": self.skipped,
            "running": self.finished is None,
            "elapsed": round(elapsed, 3),
        }


async def run_load(run: LoadRun, push: Callable[[str, str], int]) -> None:
    """Push `run.rate` messages a second for `run.seconds`, round-robin over the sellers."""
    sellers = itertools.cycle(run.sellers)
    total = int(run.rate * run.seconds)
    tick = 0.01
    try:
        while run.sent + run.skipped < total:
            due = min(total, int((time.monotonic() - run.started) * run.rate) + 1)
            burst = min(due - run.sent - run.skipped, max(1, int(run.rate)))
            for _ in range(burst):
                n = run.sent + run.skipped
                if push(next(sellers), f"load {n}: 还在吗"):
                    run.sent += 1
                else:
                    run.skipped += 1
            await asyncio.sleep(tick)
    finally:
        run.finished = time.monotonic()
