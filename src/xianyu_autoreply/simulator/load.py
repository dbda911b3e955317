"""A steady load of buyer messages generated inside the simulator, for benchmarks.

Driving the load from the platform side keeps the engine process under test free of load-generator work, so
its CPU and memory figures are its own. Messages are spread over the given (or all registered) sellers, each to
a new chat, evenly paced: message n is due at start + n / rate, and the generator sleeps until the next one is due
(a fixed 10 ms tick sent 500 msg/s as bursts of five, which queue behind each other at the receiver and show up
as latency of the load generator, not of the client). A late wake-up sends what is due, never more than one
second's worth at once.
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
    try:
        while (n := run.sent + run.skipped) < total:
            due = min(total, int((time.monotonic() - run.started) * run.rate) + 1)
            for _ in range(min(due - n, max(1, int(run.rate)))):
                n = run.sent + run.skipped
                if push(next(sellers), f"load {n}: 还在吗"):
                    run.sent += 1
                else:
                    run.skipped += 1
            next_due = run.started + (run.sent + run.skipped) / run.rate
            await asyncio.sleep(max(0.0, next_due - time.monotonic()))
    finally:
        run.finished = time.monotonic()
