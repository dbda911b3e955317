"""Device ids, request `mid`s and message `uuid`s (PROTOCOL.md §1.3-§1.4).

The platform's clients derive `mid` and `uuid` from the wall clock, so two made in the same millisecond collide.
Ours keep the wire format and never repeat within a process (thread-safe): a `mid` tells apart up to 1,000 ids
in one millisecond by its 0-999 prefix, and a `uuid` draws its millisecond from a clock that never returns the
same value twice (it runs ahead of the wall clock only while more than 1,000 sends a second are made).
"""

from __future__ import annotations

import secrets
import threading
import time

_HEX = "0123456789ABCDEF"


class _UniqueMillis:
    """A millisecond clock that never returns the same value twice in this process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        now = time.time_ns() // 1_000_000
        with self._lock:
            self._last = now if now > self._last else self._last + 1
            return self._last


class _MidSequence:
    """(millisecond, 0-999) pairs that never repeat; the millisecond moves on when a millisecond's 1,000 are used."""

    def __init__(self) -> None:
        self._ms = 0
        self._seq = 0
        self._lock = threading.Lock()

    def __call__(self) -> tuple[int, int]:
        now = time.time_ns() // 1_000_000
        with self._lock:
            if now > self._ms:
                self._ms, self._seq = now, secrets.randbelow(500)
            else:
                self._seq += 1
                if self._seq > 999:
                    self._ms, self._seq = self._ms + 1, 0
            return self._ms, self._seq


_unique_ms = _UniqueMillis()
_mid_sequence = _MidSequence()


def new_device_id(unb: str) -> str:
    """`XXXXXXXX-XXXX-4XXX-YXXX-XXXXXXXXXXXX-<unb>` with uppercase hex, as the web client makes it."""
    chars = [secrets.choice(_HEX) for _ in range(36)]
    for pos in (8, 13, 18, 23):
        chars[pos] = "-"
    chars[14] = "4"
    chars[19] = secrets.choice("89AB")
    return "".join(chars) + "-" + unb


def new_mid() -> str:
    """A request id: a 0-999 prefix, epoch milliseconds, then `" 0"`; unique within the process."""
    ms, seq = _mid_sequence()
    return f"{seq}{ms} 0"


def new_uuid() -> str:
    """A client message id for sends: `-<epoch ms>1`; unique within the process."""
    return f"-{_unique_ms()}1"


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000
