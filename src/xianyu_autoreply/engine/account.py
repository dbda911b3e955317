"""One account in the engine: its lifecycle, what the API reads of it, and its in-memory half.

`AccountRuntime` is what the scheduler keeps per account between the database and the running tasks: the cookie
and proxy it runs with, its supervisor task, its session and pipeline while it runs, and counters folded in from
every session it ran.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass
from typing import Any

from ..platform.session import AccountSession
from ..platform.values import ConnectionState, SessionStats
from ..protocol import now_ms
from ..replies import ChatFacts
from .pipeline import AccountPipeline
from .replier import AccountReplier
from .steps import AccountSteps


class Lifecycle(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    AUTH_EXPIRED = "auth_expired"
    ERROR = "error"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the engine knows about an account right now (the API's `/accounts/{id}/state`)."""

    account_id: str
    lifecycle: Lifecycle
    connection: str
    since_ms: int
    last_error: str | None
    reconnects: int
    messages_in: int
    replies_out: int
    crashes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AccountRuntime:
    """The in-memory half of one account."""

    def __init__(self, account_id: str, *, cookie: str, proxy: str | None, enabled: bool, version: int) -> None:
        self.account_id = account_id
        self.cookie = cookie
        self.proxy = proxy
        self.enabled = enabled
        self.version = version
        self.lock = asyncio.Lock()
        self.lifecycle = Lifecycle.STOPPED
        self.since_ms = now_ms()
        self.last_error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.session: AccountSession | None = None
        self.pipeline: AccountPipeline | None = None
        self.replier: AccountReplier | None = None
        self.steps: AccountSteps | None = None
        self.crashes: deque[float] = deque()
        self.totals = SessionStats()
        self.items: OrderedDict[str, ChatFacts] = OrderedDict()

    def absorb(self, stats: SessionStats) -> None:
        """Fold a finished session's counters into the account's totals."""
        self.totals.reconnects += stats.reconnects
        self.totals.messages_in += stats.messages_in
        self.totals.replies_out += stats.replies_out

    def state(self) -> AccountState:
        live = self.session.stats if self.session is not None else SessionStats()
        connection = self.session.state.value if self.session is not None else ConnectionState.DISCONNECTED.value
        return AccountState(
            account_id=self.account_id,
            lifecycle=self.lifecycle,
            connection=connection,
            since_ms=self.since_ms,
            last_error=self.last_error,
            reconnects=self.totals.reconnects + live.reconnects,
            messages_in=self.totals.messages_in + live.messages_in,
            replies_out=self.totals.replies_out + live.replies_out,
            crashes=len(self.crashes),
        )
