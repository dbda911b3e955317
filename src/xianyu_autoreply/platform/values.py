"""What a session reads and writes, as values: its states, a push, a reply to send and what became of it.

Kept apart from the session so that the pipeline, the order desk and the API can name them without the session's
machinery, and so the session file stays about connecting and serving.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..protocol import Content, Event, ImageContent, TextContent


class ConnectionState(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    CLOSED = "closed"


class SessionOutcome(enum.StrEnum):
    """Why `run()` returned."""

    CLOSED = "closed"  # asked to stop
    AUTH_EXPIRED = "auth_expired"  # the login behind the cookie is gone: needs a new cookie


@dataclass(frozen=True, slots=True)
class StateChange:
    account_id: str
    state: ConnectionState
    reason: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Push:
    """One push as it arrived: its decoded events (malformed items already counted and left out) and its ACK."""

    events: tuple[Event, ...]
    received_ms: int
    _ack: Callable[[], Awaitable[bool]] = field(repr=False)

    async def ack(self) -> bool:
        """Acknowledge the push on the connection it came on; False when that connection is gone (the platform
        then pushes it again, and the owner's record answers "seen")."""
        return await self._ack()


@dataclass(frozen=True, slots=True)
class Reply:
    """What to send back: text or an image URL, and where the answer came from (for the conversation log)."""

    text: str | None = None
    image_url: str | None = None
    source: str = ""

    def content(self) -> Content:
        if self.image_url:
            return ImageContent(self.image_url)
        return TextContent(self.text or "")


class SendOutcome(enum.StrEnum):
    """What became of a send: what callers decide on (retry, never retry), never the error's text."""

    CONFIRMED = "confirmed"  # the platform answered 200
    NOT_SENT = "not_sent"  # provably never left (no connection) or refused by the platform: safe to try again
    UNCONFIRMED = "unconfirmed"  # left, but no answer came: it may have reached the buyer, so never repeated


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """A message we sent: its outcome, and the error when it was not confirmed."""

    chat_id: str
    to_user: str
    uuid: str
    content: Content
    source: str
    outcome: SendOutcome
    error: str | None = None
    in_reply_to: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is SendOutcome.CONFIRMED


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Reconnect timing as data: full-jitter exponential backoff between `base` and `cap` seconds."""

    base: float = 1.0
    cap: float = 60.0
    stable_after: float = 10.0  # a connection that lived this long resets the failure count
    login_check_after: int = 5  # consecutive failures before asking passport whether the login is gone
    risk_backoff: float = 600.0  # wait after a captcha demand
    token_retry: float = 60.0  # wait before retrying a failed scheduled token refresh


@dataclass
class SessionStats:
    connected_since_ms: int | None = None
    reconnects: int = 0
    messages_in: int = 0
    replies_out: int = 0
    malformed: int = 0
    left_unacked: int = 0  # pushes left unacknowledged for the next owner: held, closing, or nobody reading
    send_failures: int = 0
    heartbeats: int = 0
    last_error: str | None = None
    reconnect_reasons: dict[str, int] = field(default_factory=dict)
