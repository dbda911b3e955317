"""The event loop the long-running commands (`serve`, `worker`, `demo`) run on: uvloop when it is installed.

uvloop's transports and loop are written in C: the same engine spends less CPU per frame on it (see
docs/performance.md, "uvloop"). It stays optional (`pip install 'xianyu-autoreply[speed]'`) because it does not
build everywhere; `XAR_EVENT_LOOP=asyncio` keeps the standard loop even when uvloop is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

EventLoopChoice = Literal["auto", "asyncio", "uvloop"]

T = TypeVar("T")


class EventLoopUnavailable(RuntimeError):
    """`XAR_EVENT_LOOP=uvloop` was asked for but uvloop cannot be imported."""


def loop_factory(choice: EventLoopChoice = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for `asyncio.Runner`: uvloop's for `auto` (when installed) and `uvloop`, None for the stdlib."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                "XAR_EVENT_LOOP=uvloop, but uvloop is not installed: pip install 'xianyu-autoreply[speed]'"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(choice: EventLoopChoice = "auto") -> str:
    """`uvloop` or `asyncio`: what `run` would use, for start-up banners and benchmark results."""
    return "asyncio" if loop_factory(choice) is None else "uvloop"


def run(main: Coroutine[Any, Any, T], *, loop: EventLoopChoice = "auto") -> T:
    """`asyncio.run(main)` on the chosen loop (same Ctrl-C and clean-up behaviour)."""
    try:
        factory = loop_factory(loop)
    except EventLoopUnavailable:
        main.close()  # never awaited: close it so Python does not warn about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
