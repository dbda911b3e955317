"""The reply-latency probe: push of a buyer message -> first send into that chat, on the platform's clock."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from xianyu_autoreply.simulator import Simulator

from .bare import BareClient


async def test_the_first_reply_into_a_chat_is_timed_once(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any], online: BareClient
) -> None:
    pushed = sim.push_message(seller["unb"], "在吗")
    await online.next_push()
    await asyncio.sleep(0.02)
    await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "在的"))
    await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "还有什么问题"))
    samples = sim.reply_latencies()
    assert len(samples) == 1 and 20 <= samples[0] < 3000
    after = (await http.get(f"{sim.control_url}latency", params={"since": "1"})).json()
    assert after == {"samples_ms": [], "total": 1}  # a poller asks only for what is new
    bad = await http.get(f"{sim.control_url}latency", params={"since": "-1"})
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    answer = (await http.get(f"{sim.control_url}latency", params={"reset": "1"})).json()
    assert answer == {"samples_ms": samples, "total": 1}
    assert sim.reply_latencies() == []


async def test_messages_typed_by_the_seller_are_not_timed(
    sim: Simulator, seller: dict[str, Any], online: BareClient
) -> None:
    pushed = sim.push_message(seller["unb"], "我自己说", from_seller=True)
    await online.next_push()
    await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "x"))
    assert sim.reply_latencies() == []


async def test_a_load_run_pushes_the_asked_rate_to_connected_sellers(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any], online: BareClient
) -> None:
    started = (await http.post(f"{sim.control_url}load", json={"rate": 200, "seconds": 0.25})).json()
    assert started["running"] and started["sellers"] == 1
    pushes = [await online.next_push() for _ in range(50)]
    assert len(pushes) == 50
    for _ in range(100):
        status = (await http.get(f"{sim.control_url}load")).json()
        if not status["running"]:
            break
        await asyncio.sleep(0.02)
    assert status == {**status, "running": False, "sent": 50, "skipped": 0}


async def test_a_load_run_with_bad_numbers_is_refused_and_nothing_runs(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    answer = await http.post(f"{sim.control_url}load", json={"rate": -1, "seconds": 1})
    assert answer.status_code == 400 or answer.status_code == 422
    answer = await http.post(f"{sim.control_url}load", json={"rate": 10, "seconds": 1})
    assert answer.status_code >= 400, "no seller is connected, so there is nothing to load"
    assert (await http.get(f"{sim.control_url}load")).json() is None
