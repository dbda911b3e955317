"""Limits: process-wide ones shared by every session (message handling, verification slots) and the send rate."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


class SlotTimeout(TimeoutError):
    """No slot became free within the wait limit."""


class SlotLimiter:
    """At most `capacity` holders at once; waiters are served first come, first served, each with a timeout.

    Used for expensive or risky work (human verification after risk control) so that a wave of accounts
    hitting a captcha at once does not open a wave of verification flows.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a SlotLimiter needs at least one slot")
        self.capacity = capacity
        self._semaphore = asyncio.Semaphore(capacity)  # FIFO wake-up order in CPython
        self._waiting = 0

    @property
    def in_use(self) -> int:
        return self.capacity - self._semaphore._value

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self, *, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block; `SlotTimeout` after `timeout` seconds of waiting."""
        self._waiting += 1
        try:
            async with asyncio.timeout(timeout):
                await self._semaphore.acquire()
        except TimeoutError:
            raise SlotTimeout(f"no free slot within {timeout}s ({self.capacity} in use)") from None
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._semaphore.release()


@dataclass
class ProcessLimits:
    """The limits one engine process shares across its sessions."""

    max_messages: int = 2000
    verification_slots: int = 3
    messages: asyncio.Semaphore = field(init=False)
    verifications: SlotLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.messages = asyncio.Semaphore(self.max_messages)
        self.verifications = SlotLimiter(self.verification_slots)


class TokenBucket:
    """Outbound rate limit: `rate` messages per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self._rate)
                self._tokens = 1.0
                self._at = time.monotonic()
            self._tokens -= 1
