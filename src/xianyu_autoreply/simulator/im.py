"""The IM WebSocket (PROTOCOL.md §6-§13, §19.7-§19.14): registration, heartbeats, sends, pushes, ACK tracking.

aiohttp runs one handler per connection and nothing else does: no task and no timer per connection. Heartbeats are
counted as they arrive and idle connections are found by one periodic sweep over all of them. Pushes go through a
small per-connection outbox so that the synchronous push API keeps their order; a flush task lives only while a
connection has frames queued.

A push stays outstanding until one connection of its seller acknowledges it. When the last connection holding an
outstanding push closes, the push is pushed again (a fresh `mid`) to the seller's newest synced connection, or to
its next one after that one's `ackDiff` (inferred, `Options.redeliver_unacked`; docs/protocol-delivery.md).
Push-to-ACK times are measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from ..protocol import (
    Content,
    FrameKind,
    ImageContent,
    Inbound,
    InvalidCookie,
    MalformedFrame,
    TextContent,
    decode_content,
    encode_frame,
    now_ms,
    parse_client_frame,
    parse_cookie,
    push_frame,
    response_frame,
)
from ..protocol.frames import LWP_ACK_DIFF, LWP_CREATE_CHAT, LWP_HEARTBEAT, LWP_REG, LWP_SEND, MAX_FRAME_BYTES
from .faults import FaultKind, FaultTable, slow_delay
from .options import Options
from .pushes import GOOFISH, chat_payload, garbage_frames
from .world import Chat, RejectedSend, Seller, SentMessage, World, WorldError

log = structlog.get_logger("xianyu_autoreply.simulator")

_PENDING_ACKS = 256  # pushes per connection whose ACK we still wait for; older ones are forgotten
_OUTSTANDING = 256  # unacknowledged pushes kept per seller for redelivery; older ones are forgotten
_CLOSED_KEPT = 20  # closed-connection records kept per seller
_REG_REJECTED = 1008
_IMAGE_TEXT = "[图片]"


class Connection:
    """One client WebSocket: who it is and the counters tests assert on. Kept small: 5,000 of them must fit."""

    __slots__ = (
        "acks",
        "bad_frames",
        "close_code",
        "closed_by",
        "closed_ms",
        "did",
        "duplicate_acks",
        "flushing",
        "heartbeats",
        "id",
        "last_seen",
        "opened_ms",
        "outbox",
        "pending",
        "pushes",
        "registered",
        "requests",
        "seller",
        "sid",
        "synced_ms",
        "transport",
        "ws",
    )

    def __init__(
        self, conn_id: int, seller: str, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> None:
        self.id = conn_id
        self.seller = seller
        self.ws = ws
        self.transport = transport
        self.sid = f"sim-{conn_id}"
        self.did: str | None = None
        self.registered = False
        self.heartbeats = 0
        self.requests = 0
        self.pushes = 0
        self.acks = 0
        self.duplicate_acks = 0
        self.bad_frames = 0
        self.synced_ms: int | None = None
        self.opened_ms = now_ms()
        self.closed_ms: int | None = None
        self.close_code: int | None = None
        self.closed_by: str | None = None  # "client", "server" (close frame), "abort" (TCP), "lost" (no close frame)
        self.last_seen = time.monotonic()
        # mid -> (push id or None, monotonic ns when queued)
        self.pending: dict[str, tuple[int | None, int]] = {}
        self.outbox: deque[str | bytes] | None = None
        self.flushing = False

    def expect_ack(self, mid: str, push_id: int | None) -> None:
        self.pending[mid] = (push_id, time.monotonic_ns())
        if len(self.pending) > _PENDING_ACKS:
            del self.pending[next(iter(self.pending))]

    def ack(self, mid: str | None) -> tuple[int | None, int] | None:
        """Count the ACK of one of our pushes -> (push id, queued ns); a repeated or unknown one is counted apart."""
        if mid is not None and (entry := self.pending.pop(mid, None)) is not None:
            self.acks += 1
            return entry
        self.duplicate_acks += 1
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seller": self.seller,
            "did": self.did,
            "registered": self.registered,
            "heartbeats": self.heartbeats,
            "requests": self.requests,
            "pushes": self.pushes,
            "acks": self.acks,
            "duplicate_acks": self.duplicate_acks,
            "unacked": len(self.pending),
            "bad_frames": self.bad_frames,
            "synced_ms": self.synced_ms,
            "opened_ms": self.opened_ms,
            "closed_ms": self.closed_ms,
            "close_code": self.close_code,
            "closed_by": self.closed_by,
        }


class LatencyProbe:
    """Reply latency as the platform sees it: a buyer message pushed into a chat -> the first send into that chat.

    One monotonic clock on one side of the wire, so a benchmark in another process needs no clock sync.
    """

    def __init__(self, *, keep: int = 1_000_000) -> None:
        self._pushed: dict[str, int] = {}
        self._samples: deque[float] = deque(maxlen=keep)
        self._acks: deque[float] = deque(maxlen=keep)  # push queued -> its ACK received, ms

    def pushed(self, chat_id: str) -> None:
        if len(self._pushed) >= 100_000:  # chats nobody answers must not grow the probe without bound
            self._pushed.pop(next(iter(self._pushed)))
        self._pushed.setdefault(chat_id, time.monotonic_ns())

    def replied(self, chat_id: str) -> None:
        start = self._pushed.pop(chat_id, None)
        if start is not None:
            self._samples.append((time.monotonic_ns() - start) / 1e6)

    def acked(self, queued_ns: int) -> None:
        self._acks.append((time.monotonic_ns() - queued_ns) / 1e6)

    def samples(self, *, reset: bool = False) -> list[float]:
        found = list(self._samples)
        if reset:
            self._samples.clear()
            self._pushed.clear()
        return found

    def ack_samples(self, *, reset: bool = False) -> list[float]:
        found = list(self._acks)
        if reset:
            self._acks.clear()
        return found


class Hub:
    """Every connection, live and recently closed, by seller; delivery of frames through per-connection outboxes."""

    def __init__(self, options: Options | None = None) -> None:
        self._options = options or Options()
        self._live: dict[int, Connection] = {}
        self._by_seller: dict[str, dict[int, Connection]] = {}
        self._closed: dict[str, deque[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self.registered_count = 0
        self.frames_pushed = 0
        self.redelivered = 0
        self.latency = LatencyProbe()
        self._push_ids = itertools.count(1)
        self._outstanding: dict[str, dict[int, list[str]]] = {}  # seller -> push id -> payloads, until one ACK
        self._redeliver: dict[str, list[int]] = {}  # seller -> push ids for its next connection

    # --- bookkeeping -------------------------------------------------------------------------------------------

    def open(self, seller: str, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> Connection:
        conn = Connection(next(self._ids), seller, ws, transport)
        self._live[conn.id] = conn
        self._by_seller.setdefault(seller, {})[conn.id] = conn
        return conn

    def register(self, conn: Connection, did: str) -> None:
        conn.did = did
        if not conn.registered:
            conn.registered = True
            self.registered_count += 1

    def closed(self, conn: Connection) -> None:
        """Record how a connection ended, once its handler is done."""
        if conn.closed_by is None:
            code = conn.ws.close_code
            conn.closed_by, conn.close_code = ("lost", None) if code in (None, 1006) else ("client", int(code))
        conn.closed_ms = now_ms()
        if conn.registered:
            self.registered_count -= 1
        record = conn.to_json()  # with the pushes it never ACKed
        self._orphaned(conn)
        conn.pending.clear()
        conn.outbox = None
        self._live.pop(conn.id, None)
        mine = self._by_seller.get(conn.seller)
        if mine is not None:
            mine.pop(conn.id, None)
            if not mine:
                del self._by_seller[conn.seller]
        kept = self._closed.get(conn.seller)
        if kept is None:
            kept = self._closed[conn.seller] = deque(maxlen=_CLOSED_KEPT)
        kept.append(record)

    # --- acknowledgements and redelivery --------------------------------------------------------------------

    def ack(self, conn: Connection, mid: str | None) -> None:
        """An ACK from a client: the push is no longer outstanding for its seller, and its ACK time is sampled."""
        entry = conn.ack(mid)
        if entry is None:
            return
        push_id, queued_ns = entry
        self.latency.acked(queued_ns)
        if push_id is not None:
            self._outstanding.get(conn.seller, {}).pop(push_id, None)

    def _orphaned(self, conn: Connection) -> None:
        """A connection closed: its unacknowledged pushes that no other live connection holds wait for the next."""
        outstanding = self._outstanding.get(conn.seller)
        if not outstanding or not self._options.redeliver_unacked:
            return
        held = {
            push_id
            for other in self._by_seller.get(conn.seller, {}).values()
            if other is not conn and other.closed_ms is None
            for push_id, _ in other.pending.values()
        }
        queue = self._redeliver.setdefault(conn.seller, [])
        for push_id, _ in conn.pending.values():
            if push_id is not None and push_id in outstanding and push_id not in held and push_id not in queue:
                queue.append(push_id)
        others = [c for c in self.registered_of(conn.seller) if c is not conn and c.closed_ms is None and c.synced_ms]
        if queue and others:  # another connection already synced: it gets them now (the newest one)
            self.redeliver(max(others, key=lambda c: c.id))

    def redeliver(self, conn: Connection) -> int:
        """Push what the seller's earlier connections left unacknowledged to `conn` (after its ackDiff)."""
        queue = self._redeliver.pop(conn.seller, None)
        outstanding = self._outstanding.get(conn.seller, {})
        sent = 0
        for push_id in queue or ():
            payloads = outstanding.get(push_id)
            if payloads is None:
                continue  # acknowledged meanwhile
            frame = push_frame(payloads, sid=conn.sid)
            if self.enqueue(conn, encode_frame(frame), ack_mid=frame["headers"]["mid"], push_id=push_id):
                sent += 1
            else:
                self._redeliver.setdefault(conn.seller, []).append(push_id)
        self.redelivered += sent
        return sent

    def live(self, seller: str | None = None) -> list[Connection]:
        if seller is None:
            return list(self._live.values())
        return list(self._by_seller.get(seller, {}).values())

    def registered_of(self, seller: str) -> list[Connection]:
        return [c for c in self._by_seller.get(seller, {}).values() if c.registered]

    def records(self, seller: str | None = None) -> list[dict[str, Any]]:
        """Closed (most recent per seller) and live connections, oldest first."""
        if seller is None:
            closed = [r for kept in self._closed.values() for r in kept]
        else:
            closed = list(self._closed.get(seller, ()))
        records = closed + [c.to_json() for c in self.live(seller)]
        return sorted(records, key=lambda r: r["id"])

    def idle(self, silent_for: float) -> list[Connection]:
        limit = time.monotonic() - silent_for
        return [c for c in self._live.values() if c.last_seen < limit and c.closed_by is None]

    # --- output ------------------------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("simulator background task failed", error=repr(task.exception()))

    def enqueue(
        self, conn: Connection, frame: str | bytes, *, ack_mid: str | None = None, push_id: int | None = None
    ) -> bool:
        """Queue a frame for a connection (in order); False when the connection is already going away."""
        if conn.closed_by is not None or conn.closed_ms is not None or conn.ws.closed:
            return False
        if ack_mid is not None:
            conn.expect_ack(ack_mid, push_id)
        conn.pushes += 1
        self.frames_pushed += 1
        if conn.outbox is None:
            conn.outbox = deque()
        conn.outbox.append(frame)
        if not conn.flushing:
            conn.flushing = True
            self.spawn(self._flush(conn))
        return True

    async def _flush(self, conn: Connection) -> None:
        try:
            while conn.outbox:
                frame = conn.outbox.popleft()
                if isinstance(frame, bytes):
                    await conn.ws.send_bytes(frame)
                else:
                    await conn.ws.send_str(frame)
        except ConnectionError:  # closed meanwhile: the rest of the outbox has nowhere to go
            pass
        finally:
            conn.flushing = False
            conn.outbox = None

    def push(self, seller: str, payloads: list[str]) -> int:
        """Push one sync package carrying `payloads` to every registered connection of the seller; how many got it."""
        push_id = next(self._push_ids)
        delivered = 0
        for conn in self.registered_of(seller):
            frame = push_frame(payloads, sid=conn.sid)
            delivered += self.enqueue(conn, encode_frame(frame), ack_mid=frame["headers"]["mid"], push_id=push_id)
        if delivered:
            outstanding = self._outstanding.setdefault(seller, {})
            outstanding[push_id] = payloads
            if len(outstanding) > _OUTSTANDING:
                del outstanding[next(iter(outstanding))]
        return delivered

    def garbage(self, conn: Connection) -> int:
        sent = 0
        for frame, mid in garbage_frames(conn.sid):
            sent += self.enqueue(conn, frame, ack_mid=mid)
        return sent

    def abort(self, conn: Connection) -> None:
        """End the TCP connection without a close frame."""
        if conn.closed_by is not None or conn.transport is None:
            return
        conn.closed_by, conn.close_code = "abort", None
        conn.transport.abort()

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Send a close frame now; the closing handshake finishes in the background."""
        if conn.closed_by is not None:
            return
        conn.closed_by, conn.close_code = "server", code
        self.spawn(conn.ws.close(code=code, message=reason.encode()))

    async def drain(self) -> None:
        """Wait until every queued frame is written and every background close is done."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shutdown(self, *, timeout: float) -> None:
        """Close every connection with 1001 (going away); abort those that do not finish in time."""
        for conn in self.live():
            self.close(conn, 1001, "simulator stopping")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.drain()
        for conn in self.live():
            if conn.transport is not None:
                conn.transport.abort()
        for task in list(self._tasks):
            task.cancel()


class SendRejected(Exception):
    """A send frame that does not follow PROTOCOL §13.1; the reason is answered to the client."""


def parse_send(body: Any, *, seller: Seller, world: World) -> tuple[Chat, Content, str]:
    """Validate a `sendByReceiverScope` body (§19.12): the chat, the decoded content and the client's uuid."""
    if not (isinstance(body, list) and len(body) >= 2 and isinstance(body[0], dict) and isinstance(body[1], dict)):
        raise SendRejected("body must be a list: [message, {actualReceivers}]")
    message, scope = body[0], body[1]
    cid = message.get("cid")
    if not isinstance(cid, str) or not cid.endswith(GOOFISH):
        raise SendRejected("cid must be '<chat id>@goofish'")
    chat = world.chats.get(cid.removesuffix(GOOFISH))
    if chat is None or chat.seller != seller.unb:
        raise SendRejected(f"no conversation {cid} for this seller")
    receivers = scope.get("actualReceivers")
    if not isinstance(receivers, list) or not {f"{chat.buyer}{GOOFISH}", f"{seller.unb}{GOOFISH}"} <= set(receivers):
        raise SendRejected("actualReceivers must list the buyer and the sender, each '<uid>@goofish'")
    content = message.get("content")
    custom = content.get("custom") if isinstance(content, dict) else None
    if not isinstance(content, dict) or content.get("contentType") != 101:
        raise SendRejected("content.contentType must be 101")
    if not isinstance(custom, dict) or custom.get("type") != 1 or not isinstance(custom.get("data"), str):
        raise SendRejected("content.custom must be {type: 1, data: <base64 JSON>}")
    try:
        decoded = decode_content(custom["data"])
    except MalformedFrame as exc:
        raise SendRejected(f"content.custom.data: {exc}") from exc
    uuid = message.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        raise SendRejected("uuid must be a non-empty string")
    return chat, decoded, uuid


def _unb_of(request: web.Request) -> str:
    raw = "; ".join(request.headers.getall("Cookie", []))
    try:
        return parse_cookie(raw)["unb"]
    except InvalidCookie:
        return ""


class ImServer:
    """The WebSocket endpoint at `/`: answers requests, records sends, echoes them, and applies faults."""

    def __init__(self, *, world: World, hub: Hub, faults: FaultTable, options: Options) -> None:
        self._world = world
        self._hub = hub
        self._faults = faults
        self._options = options
        self._routes = {
            LWP_REG: self._reg,
            LWP_ACK_DIFF: self._ack_diff,
            LWP_HEARTBEAT: self._answer_ok,
            LWP_SEND: self._send,
            LWP_CREATE_CHAT: self._create_chat,
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seller = _unb_of(request)
        if self._faults.active(FaultKind.REFUSE, seller):
            return web.Response(status=503, text="connection refused by a simulated fault")
        ws = web.WebSocketResponse(
            max_msg_size=MAX_FRAME_BYTES + 1,  # aiohttp refuses a message of exactly max_msg_size; 1 MiB must pass
            compress=self._options.compress,
            timeout=self._options.close_timeout,
            heartbeat=None,  # the clients ping; answering is enough, and a timer per connection is not
            autoping=True,
        )
        await ws.prepare(request)
        conn = self._hub.open(seller, ws, request.transport)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._on_frame(conn, msg.data)
        finally:
            self._hub.closed(conn)
        return ws

    async def _on_frame(self, conn: Connection, raw: str | bytes) -> None:
        conn.last_seen = time.monotonic()
        try:
            inbound = parse_client_frame(raw)
        except MalformedFrame:
            conn.bad_frames += 1
            return
        if inbound.kind is FrameKind.ACK:
            self._hub.ack(conn, inbound.mid)
            return
        if inbound.kind is not FrameKind.REQUEST or inbound.mid is None:
            conn.bad_frames += 1
            return
        conn.requests += 1
        if inbound.lwp == LWP_HEARTBEAT:
            conn.heartbeats += 1
        if self._faults.active(FaultKind.SILENCE, conn.seller):
            return
        delay = slow_delay(self._faults, conn.seller, self._options.slow_delay)
        if delay:
            await asyncio.sleep(delay)
        await self._routes.get(inbound.lwp or "", self._answer_ok)(conn, inbound)

    async def _answer(
        self,
        conn: Connection,
        mid: str | None,
        *,
        code: int = 200,
        body: Any = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        if mid is None:
            return
        with contextlib.suppress(ConnectionError):
            await conn.ws.send_str(encode_frame(response_frame(mid, code=code, body=body, headers=headers)))

    async def _answer_ok(self, conn: Connection, inbound: Inbound) -> None:
        await self._answer(conn, inbound.mid)

    # --- /reg and ackDiff --------------------------------------------------------------------------------------

    def _reg_problem(self, seller: str, token: Any, did: Any) -> str | None:
        if self._faults.active(FaultKind.REJECT_REG, seller):
            return "registration rejected (simulated fault)"
        if self._faults.active(FaultKind.SESSION_EXPIRED, seller):
            return "session expired"
        if not (isinstance(token, str) and token and isinstance(did, str) and did):
            return "/reg needs the headers token and did"
        if seller not in self._world.sellers:
            return "no seller for the upgrade's cookie"
        return self._world.token_problem(token, unb=seller, did=did)

    async def _reg(self, conn: Connection, inbound: Inbound) -> None:
        headers = inbound.frame["headers"]
        problem = self._reg_problem(conn.seller, headers.get("token"), headers.get("did"))
        if problem is not None:
            await self._answer(conn, inbound.mid, code=401, body={"reason": problem})
            if conn.closed_by is None:  # close at once: well within the 1 s of §19.9
                conn.closed_by, conn.close_code = "server", _REG_REJECTED
                await conn.ws.close(code=_REG_REJECTED, message=b"registration rejected")
            return
        self._hub.register(conn, headers["did"])
        reg_headers = {"sid": conn.sid, "reg-sid": conn.sid, "reg-uid": f"{conn.seller}{GOOFISH}"}
        await self._answer(conn, inbound.mid, headers=reg_headers)
        self._window_faults(conn)

    def _window_faults(self, conn: Connection) -> None:
        """Event faults set with `seconds` also hit every connection that registers while they last."""
        if self._faults.active(FaultKind.GARBAGE, conn.seller):
            self._hub.garbage(conn)
        close = self._faults.active(FaultKind.CLOSE, conn.seller)
        if close is not None:
            self._hub.close(conn, close.code or 1000, "simulated fault")
        if self._faults.active(FaultKind.DROP, conn.seller):
            # a moment later, so that the /reg answer is on the wire before the connection dies
            asyncio.get_running_loop().call_later(0.1, self._hub.abort, conn)

    async def _ack_diff(self, conn: Connection, inbound: Inbound) -> None:
        body = inbound.frame.get("body")
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        pts = first.get("pts")
        if isinstance(pts, int) and not isinstance(pts, bool):
            conn.synced_ms = pts // 1000
        await self._answer(conn, inbound.mid)
        if conn.registered:
            self._hub.redeliver(conn)

    # --- sends -------------------------------------------------------------------------------------------------

    async def _send(self, conn: Connection, inbound: Inbound) -> None:
        seller = self._world.sellers.get(conn.seller)
        if not conn.registered or seller is None:
            await self._answer(conn, inbound.mid, code=401, body={"reason": "not registered"})
            return
        try:
            chat, content, uuid = parse_send(inbound.frame.get("body"), seller=seller, world=self._world)
        except SendRejected as exc:
            self._world.record_rejected(RejectedSend(seller.unb, str(exc), now_ms()))
            await self._answer(conn, inbound.mid, code=400, body={"reason": str(exc)})
            return
        text = content.text if isinstance(content, TextContent) else None
        image_url = content.url if isinstance(content, ImageContent) else None
        sent = SentMessage(
            seller=seller.unb,
            chat_id=chat.chat_id,
            to=chat.buyer,
            text=text,
            image_url=image_url,
            content_type=1 if text is not None else 2,
            uuid=uuid,
            message_id=self._world.new_message_id(),
            at_ms=now_ms(),
            connection=conn.id,
        )
        self._world.record_sent(sent)
        self._hub.latency.replied(chat.chat_id)
        answer = {"messageId": sent.message_id, "uuid": uuid, "createAt": sent.at_ms}
        await self._answer(conn, inbound.mid, body=answer)
        if seller.echo if seller.echo is not None else self._options.echo_sends:
            self.echo(seller, chat, sent)

    def echo(self, seller: Seller, chat: Chat, sent: SentMessage) -> int:
        """Push an accepted send back to every registered connection of its seller, as the platform does."""
        payload = chat_payload(
            chat,
            sender=seller.unb,
            sender_nick=seller.nick,
            receiver=chat.buyer,
            text=sent.text if sent.text is not None else _IMAGE_TEXT,
            message_id=sent.message_id,
            created_ms=sent.at_ms,
            content_type=sent.content_type,
        )
        return self._hub.push(seller.unb, [payload])

    async def _create_chat(self, conn: Connection, inbound: Inbound) -> None:
        body = inbound.frame.get("body")
        first = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else {}
        seller = self._world.sellers.get(conn.seller)
        pair = [first.get("pairFirst"), first.get("pairSecond")]
        own = f"{conn.seller}{GOOFISH}"
        peers = [p for p in pair if isinstance(p, str) and p != own and p.endswith(GOOFISH)]
        extension = first.get("extension")
        item_id = extension.get("itemId") if isinstance(extension, dict) else None
        if not conn.registered or seller is None:
            await self._answer(conn, inbound.mid, code=401, body={"reason": "not registered"})
            return
        if own not in pair or len(peers) != 1 or not isinstance(item_id, str):
            reason = (
                "body must be [{pairFirst, pairSecond: '<uid>@goofish' (one of them the sender), extension.itemId}]"
            )
            await self._answer(conn, inbound.mid, code=400, body={"reason": reason})
            return
        try:
            buyer = self._world.buyer(peers[0].removesuffix(GOOFISH))
            chat = self._world.chat_for(seller, buyer, self._world.item_of(seller, item_id))
        except WorldError as exc:
            await self._answer(conn, inbound.mid, code=400, body={"reason": str(exc)})
            return
        cid = f"{chat.chat_id}{GOOFISH}"
        answer = {"singleChatConversation": {"cid": cid, "pairFirst": first["pairFirst"], "bizType": "1"}}
        await self._answer(conn, inbound.mid, body=answer)

    # --- idle connections --------------------------------------------------------------------------------------

    async def sweep_idle(self) -> None:
        """Close connections that sent nothing for `idle_timeout` seconds; one task for all connections."""
        while True:
            timeout = self._options.idle_timeout
            await asyncio.sleep(min(30.0, timeout / 4) if timeout else 30.0)
            if not timeout:
                continue
            for conn in self._hub.idle(timeout):
                self._hub.close(conn, 1000, "idle timeout")
