"""The WebSocket seam: how a session opens its connection, and how an open failure is classified.

`Connector` is what `AccountSession` calls to connect; `websockets_connector` is the production one (the
`websockets` library, our TLS context, the IM's headers). A test can hand a session any other connector, e.g. one
that counts connects or fails in a chosen way, without a patched library.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Mapping
from typing import Protocol

import websockets
from websockets.asyncio.client import ClientConnection

from ..protocol.mtop import USER_AGENT
from .errors import ConnectionLost, DisconnectReason, HandshakeRejected

ORIGIN = "https://www.goofish.com"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verified client context of the process, shared by every `wss://` connection.

    Left to asyncio, each connection builds its own default context and loads the CA store again: ~27 ms of CPU
    per connect and ~1 MiB held per connection, 4-5 GiB at 5,000 accounts (`python -m bench tls`).
    """
    return ssl.create_default_context()


class Connector(Protocol):
    """Open one IM connection; raise `HandshakeRejected` or `ConnectionLost` (with its reason) when it fails."""

    async def __call__(
        self, url: str, *, headers: Mapping[str, str], proxy: str | None, open_timeout: float
    ) -> ClientConnection: ...


async def websockets_connector(
    url: str, *, headers: Mapping[str, str], proxy: str | None, open_timeout: float
) -> ClientConnection:
    """The production connector: `websockets.connect` with the IM's options, failures mapped to our errors."""
    try:
        return await websockets.connect(
            url,
            ssl=tls_context() if url.startswith("wss://") else None,
            additional_headers=dict(headers),
            user_agent_header=USER_AGENT,
            origin=ORIGIN,  # type: ignore[arg-type]  # websockets types Origin as a NewType of str
            proxy=proxy,
            compression=None,  # deflate costs ~100 KiB per connection; loopback and IM text gain little
            # Liveness is the `/!` heartbeat with its timeout (session `_tick`); websockets' own ping would be a
            # second keepalive task and a ping/pong per account every 20 s (bench/engine.py: idle CPU, RSS).
            ping_interval=None,
            open_timeout=open_timeout,
            close_timeout=5.0,
            max_size=1 << 20,
            max_queue=64,
        )
    except websockets.InvalidStatus as exc:
        raise HandshakeRejected(exc.response.status_code) from exc
    except (ConnectionRefusedError, websockets.InvalidProxyStatus) as exc:
        raise ConnectionLost(DisconnectReason.REFUSED, str(exc)) from exc
    except TimeoutError as exc:
        raise ConnectionLost(DisconnectReason.TIMEOUT, "opening handshake timed out") from exc
    except (OSError, websockets.InvalidHandshake, websockets.InvalidMessage, websockets.ProxyError) as exc:
        raise ConnectionLost(DisconnectReason.ABORTED, f"{type(exc).__name__}: {exc}") from exc


def lost_from(exc: websockets.ConnectionClosed | None, ws: ClientConnection | None = None) -> ConnectionLost:
    """Turn how websockets saw the end of a connection into a DisconnectReason."""
    received = exc.rcvd if exc is not None else (ws.protocol.close_rcvd if ws is not None else None)
    if received is None:
        return ConnectionLost(DisconnectReason.ABORTED, "no close frame received")
    return ConnectionLost(
        DisconnectReason.CLOSED_BY_SERVER, f"close {received.code} {received.reason}".strip(), close_code=received.code
    )
