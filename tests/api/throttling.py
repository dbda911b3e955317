"""Helpers for tests of login throttling: a clock the test moves, a throttle of the test's own on the running app,
and clients that call the app in-process from a chosen client address."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from xianyu_autoreply.api.login_throttle import LoginThrottle, ThrottlePolicy

from .conftest import Api

__all__ = ["FakeClock", "client_at", "own_throttle"]


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def own_throttle(api: Api, **policy: Any) -> Iterator[FakeClock]:
    """Give the running app a fresh throttle with `policy` on a fake clock for the block (then the old one back)."""
    auth = api.server.app.state.auth
    clock = FakeClock()
    saved = auth.throttle
    auth.throttle = LoginThrottle(ThrottlePolicy(**policy), clock=clock)
    try:
        yield clock
    finally:
        auth.throttle = saved


def client_at(api: Api, host: str, **kwargs: Any) -> httpx.AsyncClient:
    """A client calling the app in-process, seen by it as coming from `host` (answers recorded as api.client's)."""
    return api.client(transport=httpx.ASGITransport(app=api.server.app, client=(host, 40_000)), **kwargs)
