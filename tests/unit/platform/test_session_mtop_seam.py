"""AccountSession against an in-memory `MtopApi` and connector: failures classified by type, without any network.

The token is fetched before the WebSocket is opened, so a failing fetch never reaches the (unroutable) ws_url.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from websockets.asyncio.client import ClientConnection

from xianyu_autoreply.platform.errors import (
    ConnectionLost,
    DisconnectReason,
    HandshakeRejected,
    SessionExpired,
    TransportError,
)
from xianyu_autoreply.platform.mtop_client import CookieJar, ItemDetail
from xianyu_autoreply.platform.session import AccountSession, ReconnectPolicy, SessionOutcome

from ...polling import eventually

COOKIE = "unb=2200000001; _m_h5_tk=abc_1700000000000; cookie2=c2"
POLICY = ReconnectPolicy(base=0.01, cap=0.02, login_check_after=1000)


class FakeMtop:
    """An `MtopApi` whose token fetch fails as scripted and whose login check answers `alive`."""

    def __init__(self, *failures: Exception, alive: bool) -> None:
        self.failures = list(failures)
        self.alive = alive
        self.token_for: list[str] = []
        self.login_checks = 0

    async def fetch_token(self, jar: CookieJar, *, device_id: str, proxy: str | None = None) -> str:
        self.token_for.append(device_id)
        if self.failures:
            raise self.failures.pop(0)
        await asyncio.Event().wait()  # out of failures: hang here until the session is closed
        raise AssertionError("unreachable")

    async def check_login(self, jar: CookieJar, *, proxy: str | None = None) -> bool:
        self.login_checks += 1
        return self.alive

    async def item_detail(self, jar: CookieJar, *, item_id: str, proxy: str | None = None) -> ItemDetail:
        raise AssertionError("a session does not read items")

    async def confirm_shipment(self, jar: CookieJar, *, order_id: str, proxy: str | None = None) -> None:
        raise AssertionError("a session does not ship")


def session(mtop: FakeMtop) -> AccountSession:
    return AccountSession(account_id="a1", cookie=COOKIE, ws_url="ws://127.0.0.1:9/", mtop=mtop, policy=POLICY)


async def test_a_gone_login_behind_a_token_failure_ends_the_session_as_auth_expired() -> None:
    mtop = FakeMtop(SessionExpired("FAIL_SYS_SESSION_EXPIRED"), alive=False)
    s = session(mtop)
    outcome = await asyncio.wait_for(s.run(), 5)
    assert outcome is SessionOutcome.AUTH_EXPIRED
    assert s.stats.reconnect_reasons == {"session_expired": 1}
    assert mtop.token_for == [s.device_id] and mtop.login_checks == 1


async def test_transport_failures_are_token_failures_retried_without_a_login_check() -> None:
    mtop = FakeMtop(TransportError("reset"), TransportError("reset"), alive=False)
    s = session(mtop)
    run = asyncio.create_task(s.run())
    await eventually(lambda: len(mtop.token_for) == 3, timeout=5, interval=0.01)  # two retried, the third hangs
    await s.close(timeout=2)
    assert await run is SessionOutcome.CLOSED
    assert s.stats.reconnect_reasons == {"token_failed": 2}
    assert mtop.login_checks == 0


class TokenMtop(FakeMtop):
    """Hands out a token at once: the session goes on to open its WebSocket."""

    async def fetch_token(self, jar: CookieJar, *, device_id: str, proxy: str | None = None) -> str:
        self.token_for.append(device_id)
        return "token"


async def test_the_connector_seam_opens_every_connection_and_its_failures_are_classified_by_type() -> None:
    calls: list[tuple[str, str | None, str]] = []
    failures: list[Exception] = [HandshakeRejected(403), ConnectionLost(DisconnectReason.REFUSED, "no listener")]

    async def connector(
        url: str, *, headers: Mapping[str, str], proxy: str | None, open_timeout: float
    ) -> ClientConnection:
        calls.append((url, proxy, headers["Cookie"]))
        if failures:
            raise failures.pop(0)
        await asyncio.Event().wait()  # out of failures: the connect hangs until the session is closed
        raise AssertionError("unreachable")

    s = AccountSession(
        account_id="a1",
        cookie=COOKIE,
        ws_url="wss://im.example/",
        mtop=TokenMtop(alive=True),
        policy=POLICY,
        connector=connector,
    )
    run = asyncio.create_task(s.run())
    await eventually(lambda: len(calls) == 3, timeout=5, interval=0.01)
    await s.close(timeout=2)
    assert await run is SessionOutcome.CLOSED
    assert s.stats.reconnect_reasons == {"handshake_rejected": 1, "refused": 1}
    assert {url for url, _, _ in calls} == {"wss://im.example/"} and "unb=2200000001" in calls[0][2]
