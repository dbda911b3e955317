"""AccountSession: one seller account's IM connection, kept alive; read pushes from it and send into it.

The shape is the `websockets` library's: `async for push in session` yields each decoded push (its events and an
`ack()`), `await session.send(...)` sends a message and reports its outcome. What the pushes mean (admission, the
durable record, replies, orders) is the owner's pipeline (engine/pipeline.py); the session never calls up into it.
It reports only its own lifecycle: state changes, refreshed cookies, verification demands.

One session owns one connection at a time and two tasks while connected: the reader (responses, pushes) and the
ticker (heartbeat, heartbeat timeout, token refresh). A push is acknowledged only when its reader calls `ack()`:
after the durable record, so nothing acknowledged is ever lost. Once `hold()` or `close()` was called, pushes are
no longer yielded and stay unacknowledged, so the platform pushes them to the next connection or owner.

Connection states follow the seeds: disconnected -> connecting -> connected -> reconnecting -> ... -> closed, and
`failed` when the account cannot continue (login gone). Every transition is published with its reason.
Reconnects use exponential backoff with full jitter (tenacity), classified by exception type; a connection that
ended after being stable reconnects at once (with a little jitter), one that keeps dying early backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
import websockets
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never, wait_random_exponential
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State as WsState

from ..config import SessionSettings
from ..outbound import OutboundGuard, Purpose
from ..protocol import (
    FrameKind,
    InvalidCookie,
    MalformedFrame,
    ack_diff_frame,
    ack_frame,
    decode_push,
    encode_frame,
    heartbeat_frame,
    new_device_id,
    new_uuid,
    now_ms,
    parse_frame,
    reg_frame,
    send_frame,
)
from .connector import Connector, lost_from, tls_context, websockets_connector
from .cookie_jar import CookieJar
from .errors import (
    AuthExpired,
    ConnectionLost,
    DisconnectReason,
    HeartbeatTimeout,
    PlatformError,
    RegistrationRejected,
    RiskControl,
    SessionExpired,
    reason_of,
)
from .limits import ProcessLimits, SlotTimeout, TokenBucket
from .mtop_client import MtopApi
from .values import (
    ConnectionState,
    Push,
    ReconnectPolicy,
    Reply,
    SendOutcome,
    Sent,
    SessionOutcome,
    SessionStats,
    StateChange,
)

log = structlog.get_logger("xianyu_autoreply.session")

# Pushes decoded and not yet taken by the reader of the session; beyond it a push is left unacknowledged (the
# platform pushes it again), so a session nobody reads holds a bounded amount.
MAX_WAITING_PUSHES = 1024


class AccountSession:
    """One account's live connection. `await run()` until `close()`; read it with `async for`; see the module."""

    def __init__(
        self,
        *,
        account_id: str,
        cookie: str,
        ws_url: str,
        mtop: MtopApi,
        settings: SessionSettings | None = None,
        proxy: str | None = None,
        limits: ProcessLimits | None = None,
        policy: ReconnectPolicy | None = None,
        send_rate: float = 5.0,
        send_burst: int = 20,
        outbound: OutboundGuard | None = None,
        connector: Connector = websockets_connector,
        on_state: Callable[[StateChange], None] | None = None,
        on_cookie: Callable[[str], Awaitable[None]] | None = None,
        on_verification: Callable[[str | None], Awaitable[None]] | None = None,
    ) -> None:
        """`on_state`, `on_cookie` (a cookie value the platform refreshed, to persist) and `on_verification` (risk
        control's captcha URL) report the session's own lifecycle; each must not raise (errors are logged)."""
        self.account_id = account_id
        self._jar = CookieJar(cookie, on_cookie)  # raises InvalidCookie before anything starts
        self.seller_id = self._jar.cookies["unb"]
        self.device_id = new_device_id(self.seller_id)
        self._ws_url = ws_url
        self._mtop = mtop
        self.settings = settings or SessionSettings()
        self._proxy = proxy
        self._outbound = outbound or OutboundGuard()  # the proxy is the owner's choice: checked before each connect
        self._limits = limits or ProcessLimits()
        self.policy = policy or ReconnectPolicy()
        self._connector = connector
        self._on_state = on_state
        self._on_verification = on_verification
        self._rate = TokenBucket(send_rate, send_burst)
        self.state = ConnectionState.DISCONNECTED
        self.stats = SessionStats()
        self._ws: ClientConnection | None = None
        self._token: str | None = None
        self._token_at = 0.0
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._last_answer = 0.0
        self._connected = asyncio.Event()
        self._pushes: asyncio.Queue[Push | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._run_task: asyncio.Task[Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._held = False
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
    def cookie_jar(self) -> CookieJar:
        """The live cookie, for MTOP calls made on this account's behalf (item detail, confirm shipment)."""
        return self._jar

    def __aiter__(self) -> AsyncIterator[Push]:
        return self._read_pushes()

    async def _read_pushes(self) -> AsyncIterator[Push]:
        """Every push, in arrival order, across reconnects, until the session closes."""
        while (push := await self._pushes.get()) is not None:
            yield push

    def hold(self) -> None:
        """Yield no new push: those arriving from now on stay unacknowledged for the next owner (draining)."""
        self._held = True

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an open connection; True when there is one."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        return self._connected.is_set()

    async def run(self) -> SessionOutcome:
        """Keep the account online until `close()` (CLOSED) or until its login is gone (AUTH_EXPIRED)."""
        self._run_task = asyncio.current_task()
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

    async def close(self, *, timeout: float = 10.0) -> None:
        """Stop everything this session started and close the socket with 1001, within `timeout` seconds.

        What its reader still handles should be finished first (the pipeline's drain); no reconnect is made once
        closing, and a push arriving meanwhile is left unacknowledged.
        """
        self._closing = True
        task = self._run_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            if not self._cancelled_by_close:
                self._cancelled_by_close = True
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), timeout)
        else:
            await self._teardown()

    async def send(
        self,
        chat_id: str,
        to_user: str,
        reply: Reply,
        *,
        in_reply_to: str | None = None,
        uuid: str | None = None,
        wait_s: float = 30.0,
    ) -> Sent:
        """Send a message now and say what became of it; never sends it twice.

        A send that provably did not leave (no open connection) is retried once after the next reconnect;
        one that left but was not confirmed is reported (UNCONFIRMED), not repeated.
        """
        content = reply.content()
        uuid = uuid or new_uuid()

        def sent(outcome: SendOutcome, error: str | None = None) -> Sent:
            if error is not None:
                self.stats.send_failures += 1
                self._log.warning("send failed", chat_id=chat_id, outcome=outcome.value, error=error)
            return Sent(
                chat_id=chat_id,
                to_user=to_user,
                uuid=uuid,
                content=content,
                source=reply.source,
                outcome=outcome,
                error=error,
                in_reply_to=in_reply_to,
            )

        for attempt in (1, 2):
            ws = self._ws
            if ws is None or ws.state is not WsState.OPEN or not self._connected.is_set():
                if attempt == 2 or self._closing:  # a closing session does not reconnect
                    break
                await self.wait_connected(wait_s)
                continue
            await self._rate.take()
            frame = send_frame(chat_id=chat_id, to_user=to_user, own_id=self.seller_id, content=content, uuid=uuid)
            try:
                answer = await self._request(ws, frame, timeout=self.settings.heartbeat_timeout)
            except ConnectionLost as exc:
                return sent(SendOutcome.UNCONFIRMED, str(exc))
            if answer.code == 200:
                self.stats.replies_out += 1
                return sent(SendOutcome.CONFIRMED)
            return sent(SendOutcome.NOT_SENT, f"platform answered {answer.code}")
        return sent(SendOutcome.NOT_SENT, "not connected")

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
        reason = reason_of(exc)
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
        if self._on_verification is None:
            return
        try:
            async with self._limits.verifications.slot(timeout=60.0):
                await self._on_verification(captcha_url)
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
        ws = await self._connector(
            self._ws_url, headers=headers, proxy=self._proxy, open_timeout=max(10.0, self.settings.heartbeat_timeout)
        )
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
                raise lost_from(exc) from exc
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
            raise lost_from(exc) from exc
        raise lost_from(None, ws)

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
        if self._held or self._closing or self._pushes.qsize() >= MAX_WAITING_PUSHES:
            # Draining, or nobody reads: take nothing new. Left unACKed, the push goes to the next owner (or to
            # this account's next connection), so a handover waits only for what is being handled.
            self.stats.left_unacked += 1
            return
        decoded = decode_push(inbound.frame, own_id=self.seller_id)
        for error in decoded.errors:
            self._malformed("push", error)
        ack = ack_frame(inbound.frame)
        if not decoded.events:
            await self._ack(ws, ack)  # only malformed items: counted above, acknowledged so it never loops
            return
        self.stats.messages_in += len(decoded.events)
        self._pushes.put_nowait(Push(tuple(decoded.events), now_ms(), functools.partial(self._ack, ws, ack)))

    async def _ack(self, ws: ClientConnection, ack: dict[str, Any] | None) -> bool:
        if ack is None:
            return True
        try:
            await ws.send(encode_frame(ack))
        except websockets.ConnectionClosed:
            return False
        return True

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
            raise lost_from(exc) from exc
        except TimeoutError as exc:
            raise ConnectionLost(DisconnectReason.TIMEOUT, f"no answer to {frame['lwp']}") from exc
        finally:
            self._pending.pop(mid, None)

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
        if self._on_state is not None:
            try:
                self._on_state(StateChange(self.account_id, state, reason, now_ms()))
            except Exception:
                self._log.exception("on_state callback failed")

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
        self._pushes.put_nowait(None)  # ends the reader's `async for`


__all__ = [
    "AccountSession",
    "AuthExpired",
    "ConnectionState",
    "Connector",
    "CookieJar",
    "InvalidCookie",
    "Push",
    "ReconnectPolicy",
    "Reply",
    "SendOutcome",
    "Sent",
    "SessionOutcome",
    "SessionStats",
    "StateChange",
    "tls_context",
]
