"""Every error the protocol core raises.

    ProtocolError                 anything the wire handed us that we cannot use
    ├── InvalidCookie             a cookie string without `unb`, empty, or not a cookie string at all
    ├── MalformedFrame            an LWP frame that is not a JSON object of the expected shape
    ├── MalformedPush             a sync-package item whose payload cannot be decoded
    └── MalformedMtopResponse     an MTOP/passport answer that is not the documented envelope

Callers catch `ProtocolError` at the edge of each account so that bad input is counted and skipped, never fatal.
Every error raised while decoding carries its cause (`raise ... from`).
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Input from the wire (or a user-supplied cookie) that does not follow the protocol."""


class InvalidCookie(ProtocolError):
    """A cookie string that cannot identify a seller."""


class MalformedFrame(ProtocolError):
    """An LWP WebSocket frame that is not what the protocol allows."""


class MalformedPush(ProtocolError):
    """A push payload (base64 -> JSON or MessagePack) that cannot be decoded into an event."""


class MalformedMtopResponse(ProtocolError):
    """An HTTP answer from the MTOP gateway or passport that is not the documented envelope."""
