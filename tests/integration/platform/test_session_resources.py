"""Sessions leave nothing behind: tasks, sockets and objects after many cycles; and they go through a proxy."""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from xianyu_autoreply.config import SessionSettings
from xianyu_autoreply.engine.pipeline import AccountPipeline, Steps
from xianyu_autoreply.outbound import OutboundGuard, OutboundPolicy, OutboundRefused
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import AccountSession, ReconnectPolicy, Reply
from xianyu_autoreply.protocol import BuyerMessage
from xianyu_autoreply.replies.admission import Incoming
from xianyu_autoreply.simulator import Simulator

FAST = SessionSettings(heartbeat_interval=0.5, heartbeat_timeout=1.5)
POLICY = ReconnectPolicy(base=0.05, cap=0.3, stable_after=1.0)
LOOPBACK_ONLY = OutboundGuard(OutboundPolicy.from_entries(["127.0.0.1/32"]))  # the proxy.py below listens there


async def answer(incoming: Incoming) -> Reply | None:
    return Reply(text="ok") if isinstance(incoming.event, BuyerMessage) else None


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _wait(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_thousand_connect_disconnect_cycles_leak_no_task_socket_or_session(sim: Simulator) -> None:
    seller = sim.create_seller()
    mtop = MtopClient(mtop_url=sim.mtop_url, passport_url=sim.passport_url)
    refs: list[weakref.ref[AccountSession]] = []
    baseline_tasks = baseline_fds = None
    try:
        for cycle in range(1000):
            session = AccountSession(
                account_id="a", cookie=seller["cookie"], ws_url=sim.ws_url, mtop=mtop, settings=FAST, policy=POLICY
            )
            task = asyncio.create_task(session.run())
            await _wait(lambda s=session: s.connected)
            await session.close()
            await task
            refs.append(weakref.ref(session))
            del session, task
            if cycle == 49:  # after the HTTP pool and the simulator have warmed up
                baseline_fds, baseline_tasks = _open_fds(), len(asyncio.all_tasks())
        gc.collect()
        await asyncio.sleep(0.2)
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("a:")], "session tasks left running"
        assert baseline_tasks is not None and len(asyncio.all_tasks()) <= baseline_tasks
        assert sum(r() is not None for r in refs) == 0, "closed sessions are still referenced"
        assert baseline_fds is not None and _open_fds() <= baseline_fds + 5
        await _wait(lambda: all(c["closed_ms"] for c in sim.connections(seller=seller["unb"])))
        closed = sim.connections(seller=seller["unb"])  # the simulator keeps the latest few
        assert closed and all(c["close_code"] == 1001 and c["closed_by"] == "client" for c in closed)
    finally:
        await mtop.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP proxy (proxy.py) on loopback; yields its URL and its log file."""
    port = _free_port()
    log = tmp_path / "proxy.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "--hostname",
                "127.0.0.1",
                "--port",
                str(port),
                "--num-workers",
                "1",
                "--num-acceptors",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"proxy.py did not start: {log.read_text()[-500:]}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        proc.wait(10)


async def test_a_session_with_a_proxy_sends_websocket_and_mtop_traffic_through_it(
    sim: Simulator, http_proxy: tuple[str, Path]
) -> None:
    proxy_url, proxy_log = http_proxy
    seller = sim.create_seller()
    mtop = MtopClient(mtop_url=sim.mtop_url, passport_url=sim.passport_url, outbound=LOOPBACK_ONLY)
    session = AccountSession(
        account_id="a",
        cookie=seller["cookie"],
        ws_url=sim.ws_url,
        mtop=mtop,
        settings=FAST,
        policy=POLICY,
        proxy=proxy_url,
        outbound=LOOPBACK_ONLY,
    )
    pipeline = AccountPipeline(session, Steps(decide=answer))
    task = asyncio.create_task(pipeline.run())
    try:
        await _wait(lambda: session.connected)
        sim.push_message(seller=seller["unb"], text="through the proxy?")
        await _wait(lambda: len(sim.sent(seller=seller["unb"])) == 1)
        await asyncio.sleep(0.3)  # proxy.py writes its access log when a connection ends
    finally:
        await session.close()
        await task
        await mtop.aclose()
    await asyncio.sleep(0.5)
    logged = proxy_log.read_text()
    port = sim.port
    assert re.search(rf"CONNECT 127\.0\.0\.1:{port}", logged), logged[-2000:]
    assert re.search(rf"POST 127\.0\.0\.1:{port}/h5/mtop\.taobao\.idlemessage\.pc\.login\.token", logged), logged[
        -2000:
    ]


async def test_a_session_whose_proxy_the_policy_refuses_never_connects_through_it(
    sim: Simulator, http_proxy: tuple[str, Path]
) -> None:
    proxy_url, proxy_log = http_proxy
    seller = sim.create_seller()
    strict = OutboundGuard()  # loopback not opened: the owner's proxy on 127.0.0.1 is refused
    mtop = MtopClient(mtop_url=sim.mtop_url, passport_url=sim.passport_url, outbound=strict)
    session = AccountSession(
        account_id="a",
        cookie=seller["cookie"],
        ws_url=sim.ws_url,
        mtop=mtop,
        settings=FAST,
        policy=POLICY,
        proxy=proxy_url,
        outbound=strict,
    )
    try:
        with pytest.raises(OutboundRefused, match="loopback address"):
            await asyncio.wait_for(AccountPipeline(session, Steps(decide=answer)).run(), 10)
        with pytest.raises(OutboundRefused, match=r"proxy URL refused: 127\.0\.0\.1 is a loopback address"):
            await mtop.fetch_token(session.cookie_jar, device_id="d", proxy=proxy_url)
    finally:
        await session.close()
        await mtop.aclose()
    await asyncio.sleep(0.5)
    assert sim.connections(seller=seller["unb"]) == []
    assert "CONNECT" not in proxy_log.read_text() and "POST" not in proxy_log.read_text()
