"""Why a connection or a platform call failed, as types (the reconnect policy switches on these, not on text).

PlatformError
├── TransportError            the network: refused, reset, timed out, proxy failure (retry with backoff)
├── MtopFailure               the gateway answered with a failure we cannot act on (`ret` kept)
│   ├── TokenExpired          `_m_h5_tk` stale: merge the Set-Cookie that came with it and retry
│   ├── SessionExpired        the login is gone: the account needs a new cookie
│   └── RiskControl           captcha/slider required (`captcha_url`): back off long, tell the owner
├── NotRecorded             the owner could not durably record a push: it is not acknowledged (pushed again)
├── AuthExpired             the login check says the cookie's login is gone (the session ends: auth_expired)
└── ConnectionLost            an established or opening IM connection ended; `reason` says how
    ├── HandshakeRejected     the upgrade was refused with an HTTP status
    ├── RegistrationRejected  `/reg` was refused: the access token is no longer good
    └── HeartbeatTimeout      nothing answered our requests for HEARTBEAT_TIMEOUT
"""

from __future__ import annotations

import enum


class PlatformError(Exception):
    """A failure talking to the platform."""


class TransportError(PlatformError):
    """The request never got a usable HTTP answer (connect, read, proxy or timeout failure)."""


class MtopFailure(PlatformError):
    """The MTOP gateway answered, but not with success."""

    def __init__(self, message: str, *, ret: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.ret = ret


class TokenExpired(MtopFailure):
    """The MTOP signing token (`_m_h5_tk`) is stale; a fresh one usually arrives in Set-Cookie."""


class SessionExpired(MtopFailure):
    """The login session behind the cookie is gone: only a new cookie helps."""


class RiskControl(MtopFailure):
    """The platform wants a human verification (captcha/slider) at `captcha_url`."""

    def __init__(self, message: str, *, ret: tuple[str, ...] = (), captcha_url: str | None = None) -> None:
        super().__init__(message, ret=ret)
        self.captcha_url = captcha_url


class NotRecorded(PlatformError):
    """The session's owner could not durably record a push (its lease moved on, the database failed).

    Such a push is not acknowledged, so the platform pushes it again: to the account's next owner, or to this one
    after it reconnects. Never acknowledge what will not be handled.
    """


class DisconnectReason(enum.StrEnum):
    """How a connection ended; reported with every reconnect and used to pick the delay."""

    REFUSED = "refused"
    HANDSHAKE_REJECTED = "handshake_rejected"
    ABORTED = "aborted"
    CLOSED_BY_SERVER = "closed_by_server"
    TIMEOUT = "timeout"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    TOKEN_REJECTED = "token_rejected"
    TOKEN_FAILED = "token_failed"
    RISK_CONTROL = "risk_control"
    PROTOCOL = "protocol"


class ConnectionLost(PlatformError):
    """The IM connection could not be opened or has ended."""

    def __init__(self, reason: DisconnectReason, detail: str = "", *, close_code: int | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail
        self.close_code = close_code


class HandshakeRejected(ConnectionLost):
    def __init__(self, status: int) -> None:
        super().__init__(DisconnectReason.HANDSHAKE_REJECTED, f"HTTP {status}")
        self.status = status


class RegistrationRejected(ConnectionLost):
    def __init__(self, code: int | None) -> None:
        super().__init__(DisconnectReason.TOKEN_REJECTED, f"/reg answered {code}")


class HeartbeatTimeout(ConnectionLost):
    def __init__(self, silent_for: float) -> None:
        super().__init__(DisconnectReason.HEARTBEAT_TIMEOUT, f"no answer for {silent_for:.1f}s")


class AuthExpired(PlatformError):
    """The login check says the cookie's session is gone."""


def reason_of(exc: BaseException | None) -> str:
    """The reason name of a failed connect/serve attempt, by exception type."""
    if isinstance(exc, ConnectionLost):
        return exc.reason.value
    if isinstance(exc, RiskControl):
        return DisconnectReason.RISK_CONTROL.value
    if isinstance(exc, SessionExpired):
        return "session_expired"
    if isinstance(exc, MtopFailure | TransportError):
        return DisconnectReason.TOKEN_FAILED.value
    if isinstance(exc, ConnectionRefusedError):
        return DisconnectReason.REFUSED.value
    if isinstance(exc, OSError):
        return DisconnectReason.ABORTED.value
    return type(exc).__name__ if exc is not None else "unknown"
