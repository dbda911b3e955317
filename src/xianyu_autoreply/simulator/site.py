"""The listening socket: an aiohttp site that tolerates the duplicate headers real clients send on the upgrade.

The platform's clients pass `Host` (and sometimes `User-Agent`) as extra headers, so the `websockets` library sends
each twice (PROTOCOL §6.1, §19.7). aiohttp rejects a duplicate singleton header with HTTP 400, so every connection's
first request head passes through a filter that keeps the first of each before aiohttp parses it. Nothing after
the first head is touched: MTOP clients never send duplicates, and the upgraded WebSocket stream is left as is.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp import web

_MAX_HEAD = 64 * 1024
# aiohttp's singleton headers, minus the two that frame a body (a duplicate of those must stay an error).
_DEDUPED = frozenset(
    {
        b"host",
        b"user-agent",
        b"content-type",
        b"content-location",
        b"content-range",
        b"etag",
        b"max-forwards",
        b"server",
    }
)


def http_url(host: str, port: int, *, tls: bool = False) -> str:
    """`http://host:port` (`https://` with `tls`), with an IPv6 address in brackets."""
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def dedupe_head(head: bytes) -> bytes:
    """Drop the repeats of singleton headers from an HTTP request head (keeping the first of each)."""
    lines = head.split(b"\r\n")
    seen: set[bytes] = set()
    kept = lines[:1]
    for line in lines[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in _DEDUPED:
            if name in seen:
                continue
            seen.add(name)
        kept.append(line)
    return b"\r\n".join(kept)


class _FirstHeadFilter(asyncio.Protocol):
    """Wraps aiohttp's protocol for one connection; rewrites only the first request head."""

    __slots__ = ("_head", "_inner")

    def __init__(self, inner: asyncio.Protocol) -> None:
        self._inner = inner
        self._head: bytes | None = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            self._inner.data_received(data)
            return
        buffered = self._head + data
        end = buffered.find(b"\r\n\r\n")
        if end < 0 and len(buffered) < _MAX_HEAD:
            self._head = buffered
            return
        self._head = None
        self._inner.data_received(dedupe_head(buffered[:end]) + buffered[end:] if end >= 0 else buffered)

    def eof_received(self) -> bool | None:
        if self._head:
            head, self._head = self._head, None
            self._inner.data_received(head)
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class LoopbackSite(web.BaseSite):
    """A TCP site like aiohttp's `TCPSite`, with the head filter; `port` is the bound one after `start()`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        backlog: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host = host
        self._port = port

    @property
    def port(self) -> int:
        return self._port

    @property
    def name(self) -> str:
        return http_url(self._host, self._port, tls=self._ssl_context is not None)

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover - BaseSite.__init__ already checks
            raise RuntimeError("call runner.setup() first")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _FirstHeadFilter(server()),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            family=socket.AF_UNSPEC,
            ssl=self._ssl_context,
        )
        self._port = self._server.sockets[0].getsockname()[1]
