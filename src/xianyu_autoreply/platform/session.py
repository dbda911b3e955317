"""AccountSession: one seller account live on the IM WebSocket, kept alive and answered exactly once.

One session owns one connection at a time and two tasks while connected: the reader (responses, pushes, ACKs)
and the ticker (heartbeat, heartbeat timeout, token refresh). Each inbound event is handled in its own task,
bounded per account and per process, so a slow decision delays only its own chat.

Nothing acknowledged is ever lost: with a `record` hook, a push is acknowledged only after its owner durably
recorded every item in it (one group commit). A push that could not be recorded, or that arrives while the
session is closing, is not acknowledged, so the platform pushes it again; a crash after the record is resumed by
the owner from what it recorded.

Connection states follow the seeds: disconnected -> connecting -> connected -> reconnecting -> ... -> closed, and
`failed` when the account cannot continue (login gone). Every transition is published with its reason.
Reconnects use exponential backoff with full jitter (tenacity), classified by exception type; a connection that
ended after being stable reconnects at once (with a little jitter), one that keeps dying early backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
import websockets
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never, wait_random_exponential
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State as WsState

from ..config import SessionSettings
from ..outbound import OutboundGuard, Purpose
from ..protocol import (
    BuyerMessage,
    Content,
    Event,
    FrameKind,
    ImageContent,
    InvalidCookie,
    MalformedFrame,
    OrderEvent,
    SellerMessage,
    TextContent,
    ack_diff_frame,
    ack_frame,
    decode_push,
    encode_frame,
    heartbeat_frame,
    new_device_id,
    new_uuid,
    now_ms,
    parse_cookie,
    parse_frame,
    reg_frame,
    render_cookie,
    send_frame,
)
from ..protocol.mtop import USER_AGENT
from ..replies.memory import SeenMessages, SentTexts
from .errors import (
    ConnectionLost,
    DisconnectReason,
    HandshakeRejected,
    HeartbeatTimeout,
    MtopFailure,
    NotRecorded,
    PlatformError,
    RegistrationRejected,
    RiskControl,
    SessionExpired,
    TransportError,
)
from .limits import ProcessLimits, SlotTimeout
from .mtop_client import MtopApi

log = structlog.get_logger("xianyu_autoreply.session")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verified client context of the process, shared by every `wss://` connection.

    Left to asyncio, each connection builds its own default context and loads the CA store again: ~27 ms of CPU
    per connect and ~1 MiB held per connection, 4-5 GiB at 5,000 accounts (`python -m bench tls`).
    """
    return ssl.create_default_context()


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


class AuthExpired(PlatformError):
    """The login check says the cookie's session is gone."""


@dataclass(frozen=True, slots=True)
class StateChange:
    account_id: str
    state: ConnectionState
    reason: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """An event as the session saw it arrive, with what the session already knows about it.

    `resumed`: recorded earlier (before a crash, a reconnect or a handover) and handed back by the owner.
    """

    event: Event
    received_ms: int
    expired: bool = False
    own_echo: bool = False
    resumed: bool = False

    @property
    def key(self) -> str | None:
        """The durable dedup key of the event (the platform message id), None for events nobody records."""
        return event_key(self.event)


def event_key(event: Event) -> str | None:
    """The platform message id; an order event without one is keyed by its order and status."""
    message_id = getattr(event, "message_id", None)
    if message_id:
        return str(message_id)
    if isinstance(event, OrderEvent) and event.order_id:
        return f"order:{event.order_id}:{event.status.value}"
    return None


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


Decide = Callable[[Incoming], Awaitable[Reply | None]]
# The durable record of a push's items: per item True when new (to be handled), False when recorded before.
Record = Callable[[Sequence[Incoming]], Awaitable[Sequence[bool]]]


async def _no_decision(incoming: Incoming) -> Reply | None:
    return None


@dataclass
class SessionHooks:
    """How a session reports to its owner; every hook is optional and must not raise (errors are logged)."""

    decide: Decide = _no_decision
    on_state: Callable[[StateChange], None] | None = None
    on_incoming: Callable[[Incoming], Awaitable[None]] | None = None
    on_sent: Callable[[Sent], Awaitable[None]] | None = None
    on_cookie: Callable[[str], Awaitable[None]] | None = None
    # Durable record and dedup (the store's unique key), awaited before the push is acknowledged. Raising (e.g.
    # `NotRecorded` when the owner's lease is gone) leaves the push unacknowledged: the platform pushes it again.
    record: Record | None = None
    on_verification: Callable[[str | None], Awaitable[None]] | None = None  # risk control: captcha URL


@dataclass
class SessionStats:
    connected_since_ms: int | None = None
    reconnects: int = 0
    messages_in: int = 0
    replies_out: int = 0
    malformed: int = 0
    unrecorded: int = 0  # pushes left unacknowledged because their record failed
    left_unacked: int = 0  # pushes left unacknowledged for the next owner because the session was closing
    duplicates: int = 0
    expired: int = 0
    send_failures: int = 0
    heartbeats: int = 0
    last_error: str | None = None
    reconnect_reasons: dict[str, int] = field(default_factory=dict)


class _TokenBucket:
    """Outbound rate limit: `rate` messages per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self._rate)
                self._tokens = 1.0
                self._at = time.monotonic()
            self._tokens -= 1


class _CookieJar:
    """The session's cookie: parsed once, persisted through the owner's hook when the platform changes it."""

    def __init__(self, cookie: str, on_change: Callable[[str], Awaitable[None]] | None) -> None:
        self._cookies = parse_cookie(cookie)
        self._on_change = on_change

    @property
    def cookies(self) -> Mapping[str, str]:
        return self._cookies

    @property
    def header(self) -> str:
        return render_cookie(self._cookies)

    async def replace(self, cookies: Mapping[str, str]) -> None:
        self._cookies = dict(cookies)
        if self._on_change is not None:
            await self._on_change(render_cookie(self._cookies))


class AccountSession:
    """One account's live connection. `await run()` until `close()`; see the module docstring."""

    def __init__(
        self,
        *,
        account_id: str,
        cookie: str,
        ws_url: str,
        mtop: MtopApi,
        settings: SessionSettings | None = None,
        hooks: SessionHooks | None = None,
        proxy: str | None = None,
        limits: ProcessLimits | None = None,
        policy: ReconnectPolicy | None = None,
        send_rate: float = 5.0,
        send_burst: int = 20,
        outbound: OutboundGuard | None = None,
    ) -> None:
        self.account_id = account_id
        self.hooks = hooks or SessionHooks()
        self._jar = _CookieJar(cookie, self.hooks.on_cookie)  # raises InvalidCookie before anything starts
        self.seller_id = self._jar.cookies["unb"]
        self.device_id = new_device_id(self.seller_id)
        self._ws_url = ws_url
        self._mtop = mtop
        self.settings = settings or SessionSettings()
        self._proxy = proxy
        self._outbound = outbound or OutboundGuard()  # the proxy is the owner's choice: checked before each connect
        self._limits = limits or ProcessLimits()
        self.policy = policy or ReconnectPolicy()
        self._account_slots = asyncio.Semaphore(self.settings.max_concurrent_messages)
        self._rate = _TokenBucket(send_rate, send_burst)
        # Without a durable record (`hooks.record`), message ids are kept here twice the expiry window: a
        # re-delivery after that is expired anyway. With one, the database is the one guard and nothing is kept:
        # a copy here would cost ~200 bytes per message for ten minutes and only spare the rare re-delivery's record.
        self._seen = SeenMessages(capacity=20_000, ttl_ms=int(max(60.0, self.settings.message_expire * 2) * 1000))
        self._recent = SentTexts(per_chat=32, max_chats=2_000, ttl_ms=120_000)
        self.state = ConnectionState.DISCONNECTED
        self.stats = SessionStats()
        self._ws: ClientConnection | None = None
        self._token: str | None = None
        self._token_at = 0.0
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._last_answer = 0.0
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handlers: set[asyncio.Task[None]] = set()  # messages being handled: what `close` lets finish
        self._in_flight: set[str] = set()  # keys of events this session handles, until their handler finished
        self._takes: set[asyncio.Task[None]] = set()  # pushes being recorded (and acknowledged)
        self._run_task: asyncio.Task[SessionOutcome] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._cancelled_by_close = False
        self._log = log.bind(account_id=account_id)

    # --- public ---------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    @property
    def cookie(self) -> str:
        return self._jar.header

    @property
    def cookie_jar(self) -> _CookieJar:
        """The live cookie, for MTOP calls made on this account's behalf (item detail, confirm shipment)."""
        return self._jar

    def in_flight(self) -> frozenset[str]:
        """Keys of the events this session handles now (what a resume must leave alone)."""
        return frozenset(self._in_flight)

    async def recorded(self, timeout: float = 10.0) -> None:
        """Wait until the pushes being recorded now are recorded: each item then is either in `in_flight` (new,
        handled here) or was recorded before (a re-sent push whose row only a resume can finish)."""
        if self._takes:
            await asyncio.wait(set(self._takes), timeout=timeout)

    def resume(self, incoming: Incoming) -> bool:
        """Handle an event the owner recorded earlier and never finished; False when it is in flight here."""
        key = incoming.key
        if key is not None:
            if key in self._in_flight:
                return False
            self._in_flight.add(key)
        self._start_handler(incoming)
        return True

    async def run(self) -> SessionOutcome:
        """Keep the account online until `close()` (CLOSED) or until its login is gone (AUTH_EXPIRED)."""
        self._run_task = asyncio.current_task()  # type: ignore[assignment]
        try:
            while not self._closing:
                lost = await self._connect_and_serve()
                if self._closing:
                    break
                self.stats.reconnects += 1
                self.stats.reconnect_reasons[lost.reason.value] = (
                    self.stats.reconnect_reasons.get(lost.reason.value, 0) + 1
                )
                self._set_state(ConnectionState.RECONNECTING, lost.reason.value)
                await asyncio.sleep(random.uniform(0, self.policy.base))
            return SessionOutcome.CLOSED
        except AuthExpired as exc:
            self.stats.last_error = str(exc)
            self._set_state(ConnectionState.FAILED, "auth_expired")
            return SessionOutcome.AUTH_EXPIRED
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # Our own close() cancelled us (and nobody else did): that is a normal end, not an error.
            if self._closing and task is not None and task.cancelling() == 1:
                task.uncancel()
                return SessionOutcome.CLOSED
            raise
        finally:
            await self._teardown()
            self._set_state(ConnectionState.CLOSED, "stopped")

    async def close(self, *, timeout: float = 10.0, drain: float = 0.0) -> None:
        """Stop everything this session started and close the socket with 1001, within `timeout` seconds.

        With `drain`, the messages being handled first get up to that many seconds (of `timeout`) to finish while
        the connection stays up: an acknowledged push is never pushed again, so one dropped here would go
        unanswered. A push arriving meanwhile is not taken (with a `record` hook): left unacknowledged, the
        platform pushes it to the next connection. No reconnect is made once closing.
        """
        self._closing = True
        task = self._run_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            loop = asyncio.get_running_loop()
            until = loop.time() + timeout
            await self._drain(min(drain, timeout))
            if not self._cancelled_by_close:
                self._cancelled_by_close = True
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), max(0.0, until - loop.time()))
        else:
            await self._teardown()

    async def _drain(self, seconds: float) -> None:
        """Wait until no message handler is in flight, the connection is gone, or `seconds` passed."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (handlers := {t for t in self._handlers if not t.done()}) and self._connected.is_set():
            left = until - loop.time()
            if left <= 0:
                self._log.warning("messages still in flight when the session closed", count=len(handlers))
                return
            # In slices: a connection lost meanwhile ends the wait (its replies cannot go out anyway).
            await asyncio.wait(handlers, timeout=min(left, 0.2))

    async def send(
        self, chat_id: str, to_user: str, reply: Reply, *, in_reply_to: str | None = None, wait_s: float = 30.0
    ) -> Sent:
        """Send a message now (used for replies and the seller's manual answers); never sends it twice.

        A send that provably did not leave (no open connection) is retried once after the next reconnect;
        one that left but was not confirmed is reported, not repeated.
        """
        content = reply.content()
        uuid = new_uuid()
        for attempt in (1, 2):
            ws = self._ws
            if ws is None or ws.state is not WsState.OPEN or not self._connected.is_set():
                if attempt == 2 or self._closing:  # a closing session does not reconnect
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._connected.wait()
                continue
            await self._rate.take()
            frame = send_frame(chat_id=chat_id, to_user=to_user, own_id=self.seller_id, content=content, uuid=uuid)
            if isinstance(content, TextContent):
                self._recent.record(chat_id, text=content.text, uuid=uuid, now_ms=now_ms())
            try:
                answer = await self._request(ws, frame, timeout=self.settings.heartbeat_timeout)
            except ConnectionLost as exc:
                return await self._sent(
                    chat_id,
                    to_user,
                    uuid,
                    reply,
                    in_reply_to,
                    outcome=SendOutcome.UNCONFIRMED,
                    error=f"unconfirmed: {exc}",
                )
            if answer.code == 200:
                self.stats.replies_out += 1
                return await self._sent(chat_id, to_user, uuid, reply, in_reply_to, outcome=SendOutcome.CONFIRMED)
            return await self._sent(
                chat_id,
                to_user,
                uuid,
                reply,
                in_reply_to,
                outcome=SendOutcome.NOT_SENT,
                error=f"platform answered {answer.code}",
            )
        return await self._sent(
            chat_id, to_user, uuid, reply, in_reply_to, outcome=SendOutcome.NOT_SENT, error="not connected"
        )

    # --- connecting -----------------------------------------------------------------------------------------

    async def _connect_and_serve(self) -> ConnectionLost:
        """Connect (with backoff) and serve until the connection ends; returns why it ended after being stable."""
        retrying = AsyncRetrying(
            stop=stop_never,
            wait=self._retry_wait,
            retry=retry_if_exception_type((PlatformError, OSError)),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._open()
                started = time.monotonic()
                lost = await self._serve()
                if time.monotonic() - started < self.policy.stable_after and not self._closing:
                    raise lost  # retried with backoff; a closing session ends instead
                return lost
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RiskControl):
            return self.policy.risk_backoff
        return wait_random_exponential(multiplier=self.policy.base, max=self.policy.cap)(retry_state)

    async def _before_retry(self, retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        reason = _classify(exc)
        self.stats.reconnects += 1
        self.stats.reconnect_reasons[reason] = self.stats.reconnect_reasons.get(reason, 0) + 1
        self.stats.last_error = f"{reason}: {exc}"
        self._set_state(ConnectionState.RECONNECTING, reason)
        self._log.warning("connection failed", reason=reason, attempt=retry_state.attempt_number, error=str(exc))
        if isinstance(exc, RegistrationRejected):
            self._token = None
        if isinstance(exc, RiskControl):
            await self._verification(exc.captcha_url)
        login_due = retry_state.attempt_number % self.policy.login_check_after == 0
        if isinstance(exc, SessionExpired) or login_due:
            alive = await self._login_alive()
            if alive is False:
                raise AuthExpired("the platform says this login is gone; a new cookie is needed")

    async def _login_alive(self) -> bool | None:
        try:
            return await self._mtop.check_login(self._jar, proxy=self._proxy)
        except PlatformError as exc:
            self._log.warning("login check failed", error=str(exc))
            return None

    async def _verification(self, captcha_url: str | None) -> None:
        """Risk control: take a process-wide verification slot, then hand the URL to the owner's hook."""
        if self.hooks.on_verification is None:
            return
        try:
            async with self._limits.verifications.slot(timeout=60.0):
                await self.hooks.on_verification(captcha_url)
        except SlotTimeout:
            self._log.warning("no verification slot free; will retry later")
        except Exception:
            self._log.exception("verification hook failed")

    async def _open(self) -> None:
        self._set_state(ConnectionState.CONNECTING, "connect")
        if self._proxy:
            await self._outbound.check(self._proxy, purpose=Purpose.PROXY)  # refused: OutboundRefused, not retried
        if self._token is None or time.monotonic() - self._token_at >= self.settings.token_refresh_interval:
            await self._refresh_token()
        headers = {
            "Cookie": self._jar.header,
            "Accept-Language": "zh-CN,zh;q=0.9",
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
        }
        try:
            ws = await websockets.connect(
                self._ws_url,
                ssl=tls_context() if self._ws_url.startswith("wss://") else None,
                additional_headers=headers,
                user_agent_header=USER_AGENT,
                origin="https://www.goofish.com",  # type: ignore[arg-type]
                proxy=self._proxy,
                compression=None,  # deflate costs ~100 KiB per connection; loopback and IM text gain little
                # Liveness is the `/!` heartbeat with its timeout (`_tick`); websockets' own ping would be a second
                # keepalive task and a ping/pong per account every 20 s (bench/engine.py: idle CPU, RSS).
                ping_interval=None,
                open_timeout=max(10.0, self.settings.heartbeat_timeout),
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
        self._ws = ws
        self._last_answer = time.monotonic()
        reader = self._spawn(self._read(ws), name="reader")
        try:
            token = self._token or ""
            answer = await self._request(ws, reg_frame(token=token, device_id=self.device_id))
            if answer.code != 200:
                raise RegistrationRejected(answer.code)
            await self._request(ws, ack_diff_frame())
        except BaseException:
            reader.cancel()
            await self._drop(ws)
            raise
        self._reader = reader
        self.stats.connected_since_ms = now_ms()
        self._connected.set()
        self._set_state(ConnectionState.CONNECTED, "registered")

    async def _refresh_token(self) -> None:
        self._token = await self._mtop.fetch_token(self._jar, device_id=self.device_id, proxy=self._proxy)
        self._token_at = time.monotonic()

    # --- serving --------------------------------------------------------------------------------------------

    async def _serve(self) -> ConnectionLost:
        """Run heartbeat and token refresh beside the reader until the connection ends; say why it ended."""
        ws = self._ws
        assert ws is not None
        ticker = self._spawn(self._tick(ws), name="ticker")
        reader = self._reader
        assert reader is not None
        try:
            done, _ = await asyncio.wait({reader, ticker}, return_when=asyncio.FIRST_COMPLETED)
            finished = done.pop()
            exc = finished.exception()
            lost = exc if isinstance(exc, ConnectionLost) else ConnectionLost(DisconnectReason.PROTOCOL, repr(exc))
        finally:
            self._connected.clear()
            ticker.cancel()
            reader.cancel()
            await self._drop(ws)
        self.stats.last_error = str(lost)
        self._log.info("connection ended", reason=lost.reason.value, detail=lost.detail)
        return lost

    async def _tick(self, ws: ClientConnection) -> None:
        interval = self.settings.heartbeat_interval
        timeout = self.settings.heartbeat_timeout
        refreshing: asyncio.Task[None] | None = None
        next_refresh = self._token_at + self.settings.token_refresh_interval
        while True:
            silent = time.monotonic() - self._last_answer
            if silent > timeout:
                raise HeartbeatTimeout(silent)
            frame = heartbeat_frame()
            self._pending[frame["headers"]["mid"]] = asyncio.get_running_loop().create_future()
            try:
                await ws.send(encode_frame(frame))
            except websockets.ConnectionClosed as exc:
                raise _lost_from(exc) from exc
            self.stats.heartbeats += 1
            if time.monotonic() >= next_refresh and (refreshing is None or refreshing.done()):
                refreshing = self._spawn(self._scheduled_refresh(), name="token-refresh")
                next_refresh = time.monotonic() + self.settings.token_refresh_interval
            await asyncio.sleep(min(interval, max(0.05, timeout - silent)))

    async def _scheduled_refresh(self) -> None:
        """Renew the access token on schedule without touching the connection; retry sooner on failure."""
        try:
            await self._refresh_token()
            self._log.info("access token refreshed")
        except PlatformError as exc:
            self._log.warning("scheduled token refresh failed", error=str(exc))
            self._token_at = time.monotonic() - self.settings.token_refresh_interval + self.policy.token_retry

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                await self._on_frame(ws, raw)
        except websockets.ConnectionClosed as exc:
            raise _lost_from(exc) from exc
        raise _lost_from(None, ws)

    async def _on_frame(self, ws: ClientConnection, raw: str | bytes) -> None:
        try:
            inbound = parse_frame(raw, pending=self._pending)
        except MalformedFrame as exc:
            self._malformed("frame", exc)
            return
        if inbound.kind is FrameKind.RESPONSE:
            self._last_answer = time.monotonic()
            future = self._pending.pop(inbound.mid or "", None)
            if future is not None and not future.done():
                future.set_result(inbound)
            return
        if inbound.kind is not FrameKind.PUSH:
            return
        if self._closing and self.hooks.record is not None:
            # Draining: finish what was taken, take nothing new. Left unACKed, the push goes to the next owner
            # (or to this account's next connection), so a handover waits only for the handlers in flight.
            self.stats.left_unacked += 1
            return
        decoded = decode_push(inbound.frame, own_id=self.seller_id)
        for error in decoded.errors:
            self._malformed("push", error)
        received = now_ms()
        admitted = [a for a in (self._admit(e, received) for e in decoded.events) if a is not None]
        ack = ack_frame(inbound.frame)
        if self.hooks.record is None or not admitted:
            # Nothing durable to wait for (no owner's record, or only malformed items: counted, never looping).
            await self._ack(ws, ack)
            for incoming in admitted:
                self._start_handler(incoming)
            return
        take = self._spawn(self._take(ws, ack, admitted), name="take")
        self._takes.add(take)
        take.add_done_callback(self._takes.discard)
        self._track(take)

    async def _take(self, ws: ClientConnection, ack: dict[str, Any] | None, admitted: list[Incoming]) -> None:
        """Record a push's items, acknowledge it, then handle the new ones; no ACK for what was not recorded."""
        assert self.hooks.record is not None
        try:
            fresh = await self.hooks.record(admitted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.unrecorded += 1
            reason = "the owner refused it" if isinstance(exc, NotRecorded) else "recording it failed"
            self._log.warning(
                "push not acknowledged: the platform will push it again", reason=reason, error=str(exc)[:200]
            )
            return
        for incoming, new in zip(admitted, fresh, strict=True):
            if not new:
                self.stats.duplicates += 1  # recorded before: the owner's resume handles it if still open
            elif (key := incoming.key) is not None:
                self._in_flight.add(key)
        with contextlib.suppress(ConnectionLost):
            # A connection lost meanwhile: the push comes again and its record answers "seen"; we handle it here.
            await self._ack(ws, ack)
        for incoming, new in zip(admitted, fresh, strict=True):
            if new:
                self._start_handler(incoming)

    async def _ack(self, ws: ClientConnection, ack: dict[str, Any] | None) -> None:
        if ack is None:
            return
        try:
            await ws.send(encode_frame(ack))
        except websockets.ConnectionClosed as exc:
            raise _lost_from(exc) from exc

    def _start_handler(self, incoming: Incoming) -> None:
        self._track(self._spawn(self._handle(incoming), name="handle"))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    def _admit(self, event: Event, received_ms: int) -> Incoming | None:
        """First checks at arrival: duplicates dropped, expiry and own echoes flagged (all cheap, in memory)."""
        message_id = getattr(event, "message_id", None)
        if message_id is not None and self.hooks.record is None:
            if self._seen.contains(message_id, now_ms=received_ms):
                self.stats.duplicates += 1
                return None
            self._seen.remember(message_id, now_ms=received_ms)
        self.stats.messages_in += 1
        created = getattr(event, "created_ms", None)
        expired = bool(created) and received_ms - created > self.settings.message_expire * 1000
        echo = False
        if isinstance(event, SellerMessage):
            sent = self._recent.find_echo(event.chat_id, text=event.text, message_id=message_id, now_ms=received_ms)
            if sent is not None:
                self._recent.consume(event.chat_id, sent, now_ms=received_ms)
                echo = True
        return Incoming(event, received_ms, expired=expired, own_echo=echo)

    async def _handle(self, incoming: Incoming) -> None:
        event = incoming.event
        message_id = getattr(event, "message_id", None)
        try:
            async with self._limits.messages, self._account_slots:
                try:
                    if self.hooks.on_incoming is not None:
                        await self.hooks.on_incoming(incoming)
                    if incoming.expired:
                        self.stats.expired += 1
                        return
                    reply = await self.hooks.decide(incoming)
                    if reply is not None and isinstance(event, BuyerMessage):
                        await self.send(event.chat_id, event.sender_id, reply, in_reply_to=message_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stats.last_error = f"handler: {type(exc).__name__}: {exc}"
                    self._log.exception("message handler failed", message_id=message_id)
        finally:
            if (key := incoming.key) is not None:
                self._in_flight.discard(key)

    # --- plumbing -------------------------------------------------------------------------------------------

    async def _request(self, ws: ClientConnection, frame: dict[str, Any], *, timeout: float | None = None) -> Any:
        """Send a request frame and wait for the response with its `mid`."""
        mid = frame["headers"]["mid"]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[mid] = future
        try:
            await ws.send(encode_frame(frame))
            async with asyncio.timeout(timeout or self.settings.heartbeat_timeout):
                return await future
        except websockets.ConnectionClosed as exc:
            raise _lost_from(exc) from exc
        except TimeoutError as exc:
            raise ConnectionLost(DisconnectReason.TIMEOUT, f"no answer to {frame['lwp']}") from exc
        finally:
            self._pending.pop(mid, None)

    async def _sent(
        self,
        chat_id: str,
        to_user: str,
        uuid: str,
        reply: Reply,
        in_reply_to: str | None,
        *,
        outcome: SendOutcome,
        error: str | None = None,
    ) -> Sent:
        sent = Sent(
            chat_id=chat_id,
            to_user=to_user,
            uuid=uuid,
            content=reply.content(),
            source=reply.source,
            outcome=outcome,
            error=error,
            in_reply_to=in_reply_to,
        )
        if error is not None:
            self.stats.send_failures += 1
            self._log.warning("send failed", chat_id=chat_id, error=error)
        if self.hooks.on_sent is not None:
            try:
                await self.hooks.on_sent(sent)
            except Exception:
                self._log.exception("on_sent hook failed")
        return sent

    def _spawn(self, coro: Awaitable[Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(f"{self.account_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _malformed(self, what: str, exc: Exception) -> None:
        self.stats.malformed += 1
        if self.stats.malformed <= 3 or self.stats.malformed % 1000 == 0:
            self._log.warning("malformed input skipped", what=what, error=str(exc)[:200], total=self.stats.malformed)

    def _set_state(self, state: ConnectionState, reason: str) -> None:
        if state is self.state:
            return
        self.state = state
        if self.hooks.on_state is not None:
            try:
                self.hooks.on_state(StateChange(self.account_id, state, reason, now_ms()))
            except Exception:
                self._log.exception("on_state hook failed")

    async def _drop(self, ws: ClientConnection) -> None:
        if self._ws is ws:
            self._ws = None
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3.0):
                await ws.close(code=1001, reason="going away")
        if ws.state is not WsState.CLOSED and ws.transport is not None:
            ws.transport.abort()

    async def _teardown(self) -> None:
        self._closing = True
        self._connected.clear()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        ws = self._ws
        if ws is not None:
            await self._drop(ws)


def _lost_from(exc: websockets.ConnectionClosed | None, ws: ClientConnection | None = None) -> ConnectionLost:
    """Turn how websockets saw the end of a connection into a DisconnectReason."""
    received = exc.rcvd if exc is not None else (ws.protocol.close_rcvd if ws is not None else None)
    if received is None:
        return ConnectionLost(DisconnectReason.ABORTED, "no close frame received")
    return ConnectionLost(
        DisconnectReason.CLOSED_BY_SERVER, f"close {received.code} {received.reason}".strip(), close_code=received.code
    )


def _classify(exc: BaseException | None) -> str:
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


__all__ = [
    "AccountSession",
    "AuthExpired",
    "ConnectionState",
    "Decide",
    "Incoming",
    "InvalidCookie",
    "ReconnectPolicy",
    "Record",
    "Reply",
    "SendOutcome",
    "Sent",
    "SessionHooks",
    "SessionOutcome",
    "SessionStats",
    "StateChange",
    "event_key",
]
