"""Process-wide limits shared by every session: concurrent message handling and human-verification slots."""

from __future__ import annotations

import asyncio
import contextlib
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
