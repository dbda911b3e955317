"""Injectable platform faults: what they are, for whom, and for how long.

A fault applies to one seller or to all (`seller=None`), for `seconds` or until cleared. Four kinds are events
(`drop`, `close`, `garbage`, `expire_token`): they act at once on the live connections, and while their window
lasts (`seconds` given) also on every connection that registers; the others are states the platform is in while
they last. The table is checked on every frame, so a lookup with no fault set costs one dict test.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any


class FaultKind(enum.StrEnum):
    DROP = "drop"  # TCP abort, no close frame
    CLOSE = "close"  # close frame with `code`
    SILENCE = "silence"  # no answer to /! or any request; the connection stays open
    EXPIRE_TOKEN = "expire_token"  # access tokens invalidated, _m_h5_tk rotated, connections closed abnormally
    REJECT_REG = "reject_reg"  # /reg answered non-200 and the connection closed at once
    REFUSE = "refuse"  # WebSocket upgrade answered HTTP 503
    RISK_CONTROL = "risk_control"  # MTOP calls answer the captcha failure with data.url
    SESSION_EXPIRED = "session_expired"  # MTOP calls answer Session过期, hasLogin says no, /reg is rejected
    SLOW = "slow"  # every answer (WebSocket responses, MTOP, passport, upload) delayed by `delay`
    GARBAGE = "garbage"  # malformed frames pushed to the registered connections


EVENT_KINDS = frozenset({FaultKind.DROP, FaultKind.CLOSE, FaultKind.GARBAGE, FaultKind.EXPIRE_TOKEN})
# expire_token rotates credentials once; a window of it would keep every client locked out, which is `refuse`.
ONCE_ONLY = frozenset({FaultKind.EXPIRE_TOKEN})


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault; `until` is a `time.monotonic()` deadline, None for "until cleared" (or once only)."""

    kind: FaultKind
    seller: str | None
    until: float | None
    code: int | None = None
    delay: float | None = None

    def live(self, now: float) -> bool:
        return self.until is None or self.until > now

    def to_json(self) -> dict[str, Any]:
        left = None if self.until is None else max(0.0, round(self.until - time.monotonic(), 3))
        return {
            "kind": self.kind.value,
            "seller": self.seller,
            "seconds_left": left,
            "code": self.code,
            "delay": self.delay,
        }


class FaultTable:
    """The active faults, by kind, then by seller (None = every seller); a seller's own fault wins over a global one."""

    def __init__(self) -> None:
        self._faults: dict[FaultKind, dict[str | None, Fault]] = {}

    def add(self, fault: Fault) -> None:
        self._faults.setdefault(fault.kind, {})[fault.seller] = fault

    def active(self, kind: FaultKind, seller: str | None) -> Fault | None:
        """The fault of `kind` now in force for `seller` (or for everyone), if any."""
        table = self._faults.get(kind)
        if not table:
            return None
        now = time.monotonic()
        for key in (seller, None) if seller is not None else (None,):
            fault = table.get(key)
            if fault is None:
                continue
            if fault.live(now):
                return fault
            del table[key]
        return None

    def clear(self, seller: str | None = None) -> int:
        """Remove every fault (`seller=None`) or only those set for one seller; returns how many were removed."""
        removed = 0
        for table in self._faults.values():
            keys = list(table) if seller is None else [seller] if seller in table else []
            for key in keys:
                del table[key]
                removed += 1
        return removed

    def listing(self) -> list[Fault]:
        """The faults still in force."""
        now = time.monotonic()
        return [f for table in self._faults.values() for f in table.values() if f.live(now)]


def slow_delay(faults: FaultTable, seller: str | None, default: float) -> float:
    """Seconds to hold an answer back under a `slow` fault (0 without one)."""
    fault = faults.active(FaultKind.SLOW, seller)
    if fault is None:
        return 0.0
    return fault.delay if fault.delay is not None else default
