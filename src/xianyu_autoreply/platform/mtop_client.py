"""The MTOP gateway and passport over HTTP: one shared `httpx.AsyncClient` per proxy, timeouts everywhere.

Requests and answers are built and classified by `protocol.mtop`; this module only sends them, merges every
`Set-Cookie` into the account's cookie (handing the result to the account's `CookieJar`), and turns failures
into the typed exceptions of `platform.errors`. Retries (transport errors, a stale `_m_h5_tk`) go through tenacity.
An account's proxy is the owner's choice: it passes the outbound policy (outbound.py) before the client for it is
made, and `OutboundRefused` (not a transport error: never retried) says why when it does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ..outbound import OutboundGuard, Purpose
from ..protocol import (
    HttpCall,
    MalformedMtopResponse,
    MtopOutcome,
    MtopResult,
    access_token,
    build_confirm_shipment_request,
    build_item_detail_request,
    build_login_check_request,
    build_token_request,
    classify_login_check,
    classify_mtop,
    merge_set_cookie,
    now_ms,
)
from .errors import MtopFailure, RiskControl, SessionExpired, TokenExpired, TransportError


class CookieJar(Protocol):
    """An account's cookie as the session holds it; `replace` persists a changed cookie."""

    @property
    def cookies(self) -> Mapping[str, str]: ...

    async def replace(self, cookies: Mapping[str, str]) -> None: ...


@dataclass(frozen=True, slots=True)
class ItemDetail:
    item_id: str
    title: str
    price: str | None
    description: str


class MtopApi(Protocol):
    """The platform calls the session and the engine make, as a seam: `MtopClient` over HTTP, or a fake in tests.

    Every method raises the typed failures of `platform.errors` (`TransportError`, `TokenExpired`,
    `SessionExpired`, `RiskControl`, `MtopFailure`), never an HTTP library's own exception.
    """

    async def fetch_token(self, jar: CookieJar, *, device_id: str, proxy: str | None = None) -> str:
        """A new IM access token bound to `device_id`."""
        ...

    async def check_login(self, jar: CookieJar, *, proxy: str | None = None) -> bool:
        """Whether the cookie's login session is alive (True) or gone (False)."""
        ...

    async def item_detail(self, jar: CookieJar, *, item_id: str, proxy: str | None = None) -> ItemDetail:
        """Title, price and description of one item."""
        ...

    async def confirm_shipment(self, jar: CookieJar, *, order_id: str, proxy: str | None = None) -> None:
        """Confirm shipment of a virtual good; raises unless the platform says success."""
        ...


_MAX_IN_FLIGHT = 200  # HTTP requests at once per MtopClient (all proxies together)


class MtopClient:
    """The `MtopApi` over HTTP, for any number of accounts; close it once with `aclose()`."""

    def __init__(
        self,
        *,
        mtop_url: str,
        passport_url: str,
        timeout: float = 15.0,
        attempts: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        outbound: OutboundGuard | None = None,
    ) -> None:
        """`outbound` is the policy for the accounts' proxies (public addresses only when not given); the
        platform URLs are the administrator's and are not checked."""
        self._mtop_url = mtop_url.rstrip("/") + "/"
        self._passport_url = passport_url.rstrip("/") + "/"
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._attempts = attempts
        self._transport = transport
        self._outbound = outbound or OutboundGuard()
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        # Requests beyond the pool's connections wait here, not in httpcore's pool: its queue is rescanned whole
        # on every event (quadratic), which froze the loop with ~4,000 token fetches queued at a 5,000-account start.
        self._slots = asyncio.Semaphore(_MAX_IN_FLIGHT)

    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        client = self._clients.get(proxy)
        if client is None:
            limits = httpx.Limits(max_connections=_MAX_IN_FLIGHT, max_keepalive_connections=50)
            client = httpx.AsyncClient(
                timeout=self._timeout, proxy=proxy, transport=self._transport, limits=limits, trust_env=False
            )
            self._clients[proxy] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def _send(self, call: HttpCall, *, base: str, jar: CookieJar, proxy: str | None) -> httpx.Response:
        if proxy is not None and proxy not in self._clients:
            try:
                await self._outbound.check(proxy, purpose=Purpose.PROXY)
            except OSError as exc:
                raise TransportError(f"the proxy's host cannot be resolved: {exc}") from exc
        try:
            async with self._slots:
                response = await self._client(proxy).request(
                    call.method, base + call.path, params=call.query, data=call.form, headers=call.headers
                )
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__} calling {call.path}: {exc}") from exc
        set_cookies = response.headers.get_list("set-cookie")
        if set_cookies:
            merged = merge_set_cookie(jar.cookies, set_cookies)
            if merged != dict(jar.cookies):
                await jar.replace(merged)
        if response.status_code >= 500:
            raise TransportError(f"{call.path} answered HTTP {response.status_code}")
        return response

    async def _mtop(self, build: Any, *, jar: CookieJar, proxy: str | None, **kwargs: Any) -> MtopResult:
        """One MTOP call, rebuilt (fresh `t`, current cookie) on each attempt; raises the typed failures."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type((TransportError, TokenExpired)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                call = build(jar.cookies, t_ms=now_ms(), **kwargs)
                response = await self._send(call, base=self._mtop_url, jar=jar, proxy=proxy)
                try:
                    result = classify_mtop(response.content)
                except MalformedMtopResponse as exc:
                    raise MtopFailure(f"{call.path}: {exc}") from exc
                return _raise_for(result)
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch_token(self, jar: CookieJar, *, device_id: str, proxy: str | None = None) -> str:
        """A new IM access token bound to `device_id`."""
        result = await self._mtop(build_token_request, jar=jar, proxy=proxy, device_id=device_id)
        try:
            return access_token(result)
        except MalformedMtopResponse as exc:
            raise MtopFailure(str(exc), ret=result.ret) from exc

    async def item_detail(self, jar: CookieJar, *, item_id: str, proxy: str | None = None) -> ItemDetail:
        """Title, price and description of one item."""
        result = await self._mtop(build_item_detail_request, jar=jar, proxy=proxy, item_id=item_id)
        item = result.data.get("itemDO")
        if not isinstance(item, dict):
            raise MtopFailure("item detail answered without itemDO", ret=result.ret)
        price = item.get("soldPrice")
        return ItemDetail(
            item_id=item_id,
            title=str(item.get("title", "")),
            price=str(price) if price is not None else None,
            description=str(item.get("desc", "")),
        )

    async def confirm_shipment(self, jar: CookieJar, *, order_id: str, proxy: str | None = None) -> None:
        """Confirm shipment of a virtual good; raises unless the platform says success."""
        await self._mtop(build_confirm_shipment_request, jar=jar, proxy=proxy, order_id=order_id)

    async def check_login(self, jar: CookieJar, *, proxy: str | None = None) -> bool:
        """Ask passport whether the cookie's login session is alive (True) or gone (False)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(TransportError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                call = build_login_check_request(jar.cookies)
                response = await self._send(call, base=self._passport_url, jar=jar, proxy=proxy)
                try:
                    return classify_login_check(response.content)
                except MalformedMtopResponse as exc:
                    raise TransportError(f"login check: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover


def _raise_for(result: MtopResult) -> MtopResult:
    match result.outcome:
        case MtopOutcome.SUCCESS:
            return result
        case MtopOutcome.TOKEN_EXPIRED:
            raise TokenExpired(result.message, ret=result.ret)
        case MtopOutcome.SESSION_EXPIRED:
            raise SessionExpired(result.message, ret=result.ret)
        case MtopOutcome.RISK_CONTROL:
            raise RiskControl(result.message, ret=result.ret, captcha_url=result.captcha_url)
        case _:
            raise MtopFailure(result.message, ret=result.ret)
