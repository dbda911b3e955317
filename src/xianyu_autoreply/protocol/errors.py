"""Every error the protocol core raises, and the root every layer's input errors share.

    InputError                    bad input, nothing changed (every layer's input errors derive from it; the API
    │                             answers 422 for the whole family)
    └── ProtocolError             anything the wire handed us that we cannot use
        ├── InvalidCookie         a cookie string without `unb`, empty, or not a cookie string at all
        ├── MalformedFrame        an LWP frame that is not a JSON object of the expected shape
        ├── MalformedPush         a sync-package item whose payload cannot be decoded
        └── MalformedMtopResponse an MTOP/passport answer that is not the documented envelope

Callers catch `ProtocolError` at the edge of each account so that bad input is counted and skipped, never fatal.
Every error raised while decoding carries its cause (`raise ... from`).
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used as given; it was refused before anything changed.

    The shared root of the input errors of every layer (protocol, replies, store, ...): a caller that only needs
    to tell "the input was wrong" from "something failed" catches this one type.
    """


class ProtocolError(InputError):
    """Input from the wire (or a user-supplied cookie) that does not follow the protocol."""


class InvalidCookie(ProtocolError):
    """A cookie string that cannot identify a seller."""


class MalformedFrame(ProtocolError):
    """An LWP WebSocket frame that is not what the protocol allows."""


class MalformedPush(ProtocolError):
    """A push payload (base64 -> JSON or MessagePack) that cannot be decoded into an event."""


class MalformedMtopResponse(ProtocolError):
    """An HTTP answer from the MTOP gateway or passport that is not the documented envelope."""
