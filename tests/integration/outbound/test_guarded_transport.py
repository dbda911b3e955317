"""The outbound policy on real sockets: what a guarded client connects to, with real loopback servers that count
every TCP connection they accept (so "refused" means no packet reached them, not just an error raised).

127.0.0.2 stands in for a public address: it is allowlisted (`ALLOW=127.0.0.2/32`), 127.0.0.1 is not, and both
are loopback, so nothing here ever leaves the machine. Names are answered by stub resolvers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from xianyu_autoreply.outbound import OutboundGuard, OutboundPolicy, OutboundRefused, Purpose
from xianyu_autoreply.platform.ai import AIReplier, AIRequestFailed
from xianyu_autoreply.replies.prompt import AIQuery, ChatFacts
from xianyu_autoreply.replies.settings import AISettings

STAND_IN = "127.0.0.2"  # "public" for these tests: the only address the policy opens
INTERNAL = "127.0.0.1"
POLICY = OutboundPolicy.from_entries([f"{STAND_IN}/32"])
COMPLETION = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"m",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}'
)


@dataclass
class Server:
    """A tiny HTTP/1.1 server: counts connections, records each request head, answers what `answer` says."""

    host: str
    port: int = 0
    connections: int = 0
    heads: list[dict[str, str]] = field(default_factory=list)
    answer: Callable[[dict[str, str]], bytes] = lambda head: _response(200, b"ok")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            head = {"request": lines[0]} | {
                k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if length := int(head.get("content-length", "0")):
                await reader.readexactly(length)
            self.heads.append(head)
            writer.write(self.answer(head))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _response(status: int, body: bytes, *, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    lines = [
        f"HTTP/1.1 {status} X",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@contextlib.asynccontextmanager
async def serving(*hosts: str) -> AsyncIterator[list[Server]]:
    """One server per host, all on the same port (a URL names one port, whichever address it reaches)."""
    for _ in range(20):
        servers = [Server(host) for host in hosts]
        started: list[asyncio.Server] = []
        try:
            for server in servers:
                listening = await asyncio.start_server(server.handle, server.host, servers[0].port)
                started.append(listening)
                server.port = servers[0].port = listening.sockets[0].getsockname()[1]
        except OSError:  # the port was free on the first address only: try another
            for listening in started:
                listening.close()
            continue
        try:
            yield servers
        finally:
            for listening in started:
                listening.close()
                await listening.wait_closed()
        return
    raise RuntimeError("no port free on every address")


def sequence(*answers: Sequence[str]):  # type: ignore[no-untyped-def]
    """A resolver answering each lookup with the next answer (the last one repeats): a rebinding name."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return list(answers[min(len(calls), len(answers)) - 1])

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_the_allowlist_opens_the_address_it_lists_and_not_its_neighbour() -> None:
    async with serving(STAND_IN, INTERNAL) as (public, internal), OutboundGuard(POLICY).http_client() as client:
        ok = await client.post(f"http://{STAND_IN}:{public.port}/hook", json={"order": 1})
        assert ok.status_code == 200 and ok.text == "ok"
        with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1 is a loopback address"):
            await client.post(f"http://{INTERNAL}:{internal.port}/hook", json={"order": 1})
    assert public.connections == 1 and internal.connections == 0


async def test_a_name_that_resolves_to_loopback_gets_no_connection() -> None:
    resolve = sequence([INTERNAL])
    async with serving(INTERNAL) as (internal,), OutboundGuard(resolver=resolve).http_client() as client:
        with pytest.raises(OutboundRefused, match=r"shop\.test resolves to 127\.0\.0\.1, which is a loopback"):
            await client.get(f"http://shop.test:{internal.port}/")
    assert internal.connections == 0 and resolve.calls == ["shop.test"]


async def test_the_connection_goes_to_the_checked_address_with_the_name_in_the_host_header() -> None:
    resolve = sequence([STAND_IN])
    async with serving(STAND_IN) as (public,), OutboundGuard(POLICY, resolver=resolve).http_client() as client:
        answer = await client.get(f"http://shop.test:{public.port}/goods")
    assert answer.status_code == 200
    assert public.heads[0]["host"] == f"shop.test:{public.port}" and public.heads[0]["request"].startswith("GET /goods")


async def test_dns_rebinding_never_reaches_the_internal_address() -> None:
    """The name answers the allowed address first, then 127.0.0.1: every connection resolves and checks anew, and
    connects to the address it checked, so the second one is refused and 127.0.0.1 sees nothing."""
    resolve = sequence([STAND_IN], [INTERNAL])
    guard = OutboundGuard(POLICY, resolver=resolve)
    async with serving(STAND_IN, INTERNAL) as (public, internal), guard.http_client() as client:
        first = await client.post(f"http://rebind.test:{public.port}/hook", json={})
        assert first.status_code == 200
        for _ in range(3):  # "Connection: close": each request is a new connection, hence a new lookup
            with pytest.raises(OutboundRefused, match=r"resolves to 127\.0\.0\.1"):
                await client.post(f"http://rebind.test:{public.port}/hook", json={})
    assert public.connections == 1 and internal.connections == 0
    assert len(resolve.calls) == 4


async def test_a_check_before_the_fetch_is_not_trusted_by_the_fetch() -> None:
    """The classic rebinding: validate (public address), then fetch (now 127.0.0.1). The fetch checks again."""
    resolve = sequence(["93.184.215.14"], [INTERNAL])  # the public answer is only ever checked, never connected to
    guard = OutboundGuard(resolver=resolve)
    async with serving(INTERNAL) as (internal,), guard.http_client() as client:
        await guard.check(f"http://rebind.test:{internal.port}/hook", purpose=Purpose.WEBHOOK)
        with pytest.raises(OutboundRefused, match=r"resolves to 127\.0\.0\.1"):
            await client.post(f"http://rebind.test:{internal.port}/hook", json={})
    assert internal.connections == 0


async def test_an_answer_mixing_an_allowed_and_an_internal_address_gets_no_connection_at_all() -> None:
    guard = OutboundGuard(POLICY, resolver=sequence([STAND_IN, INTERNAL]))
    async with serving(STAND_IN, INTERNAL) as (public, internal), guard.http_client() as client:
        with pytest.raises(OutboundRefused, match=r"resolves to 127\.0\.0\.1"):
            await client.get(f"http://mixed.test:{public.port}/")
    assert public.connections == 0 and internal.connections == 0


@pytest.mark.parametrize("location", [f"http://{INTERNAL}:{{port}}/latest", "http://inside.test:{port}/latest"])
async def test_a_redirect_to_an_address_the_allowlist_does_not_list_is_refused(location: str) -> None:
    async with serving(STAND_IN, INTERNAL) as (public, internal):
        target = location.format(port=internal.port)
        public.answer = lambda head: _response(302, b"", headers=[("Location", target)])
        guard = OutboundGuard(POLICY, resolver=sequence([INTERNAL]))
        async with guard.http_client(follow_redirects=True) as client:
            with pytest.raises(OutboundRefused, match=r"127\.0\.0\.1"):
                await client.get(f"http://{STAND_IN}:{public.port}/start")
    assert public.connections == 1 and internal.connections == 0


async def test_the_ai_client_follows_no_redirect_into_the_internal_network() -> None:
    """The openai SDK follows redirects; every connection it opens is checked, and the refusal says why."""
    async with serving(STAND_IN, INTERNAL) as (public, internal):
        target = f"http://{INTERNAL}:{internal.port}/v1/chat/completions"
        public.answer = lambda head: _response(307, b"", headers=[("Location", target)])
        internal.answer = lambda head: _response(200, COMPLETION, headers=[("Content-Type", "application/json")])
        settings = AISettings(enabled=True, base_url=f"http://{STAND_IN}:{public.port}/v1", model="m", api_key="k")
        query = AIQuery(chat_id="c", buyer_text="hi", buyer_name="b", item_id="1", facts=ChatFacts(), bargain_round=0)
        async with AIReplier(settings, timeout_s=5, max_retries=0, outbound=OutboundGuard(POLICY)) as ai:
            with pytest.raises(AIRequestFailed, match=r"AI base URL refused: 127\.0\.0\.1 is a loopback address"):
                await ai.reply(query)
    assert public.connections == 1 and internal.connections == 0


async def test_the_ai_client_reaches_an_allowlisted_endpoint() -> None:
    async with serving(STAND_IN) as (public,):
        public.answer = lambda head: _response(200, COMPLETION, headers=[("Content-Type", "application/json")])
        settings = AISettings(enabled=True, base_url=f"http://{STAND_IN}:{public.port}/v1", model="m", api_key="k")
        query = AIQuery(chat_id="c", buyer_text="hi", buyer_name="b", item_id="1", facts=ChatFacts(), bargain_round=0)
        async with AIReplier(settings, timeout_s=5, max_retries=0, outbound=OutboundGuard(POLICY)) as ai:
            answer = await ai.reply(query)
    assert answer.text == "hello" and public.heads[0]["request"].startswith("POST /v1/chat/completions")


async def test_the_ai_client_refuses_an_internal_base_url_before_any_connection() -> None:
    async with serving(INTERNAL) as (internal,):
        settings = AISettings(enabled=True, base_url=f"http://{INTERNAL}:{internal.port}/v1", model="m")
        query = AIQuery(chat_id="c", buyer_text="hi", buyer_name="b", item_id="1", facts=ChatFacts(), bargain_round=0)
        async with AIReplier(settings, timeout_s=5, max_retries=0) as ai:  # the default policy: public only
            with pytest.raises(AIRequestFailed, match=r"AI base URL refused: 127\.0\.0\.1 is a loopback address"):
                await ai.reply(query)
    assert internal.connections == 0


async def test_a_guarded_client_ignores_proxies_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would fetch the URL on our behalf, past the check: HTTP(S)_PROXY is not honoured."""
    async with serving(STAND_IN, INTERNAL) as (public, internal):
        monkeypatch.setenv("HTTP_PROXY", f"http://{INTERNAL}:{internal.port}")
        monkeypatch.setenv("ALL_PROXY", f"http://{INTERNAL}:{internal.port}")
        async with OutboundGuard(POLICY).http_client() as client:
            assert (await client.get(f"http://{STAND_IN}:{public.port}/")).status_code == 200
    assert public.connections == 1 and internal.connections == 0


async def test_a_lookup_failure_is_an_ordinary_connect_error() -> None:
    async def down(host: str, port: int) -> list[str]:
        raise OSError("temporary failure in name resolution")

    async with OutboundGuard(resolver=down).http_client() as client:
        with pytest.raises(httpx.ConnectError, match=r"cannot resolve down\.test"):
            await client.get("http://down.test/")
