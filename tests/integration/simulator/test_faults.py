"""Every fault kind, as a bare client sees it (PROTOCOL.md §19.3, §19.9, §19.17)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets

from xianyu_autoreply.simulator import Simulator

from .bare import SUCCESS, BareClient, cookie_map, cookie_string, device_id, login, token_call


async def test_drop_ends_the_connection_without_a_close_frame(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    assert sim.set_fault("drop", seller=seller["unb"])["affected"] == 1
    with pytest.raises(websockets.ConnectionClosedError) as closed:
        await online.recv()
    assert closed.value.rcvd is None and closed.value.sent is None
    assert sim.connections(seller=seller["unb"])[0]["closed_by"] == "abort"


@pytest.mark.parametrize("code", [1000, 1011, 4000])
async def test_close_sends_a_close_frame_with_the_code(
    sim: Simulator, online: BareClient, seller: dict[str, Any], code: int
) -> None:
    sim.set_fault("close", seller=seller["unb"], code=code)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await online.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_close_defaults_to_1000_and_spares_other_sellers(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    mine, _, _ = await login(sim, http, seller)
    other, _, _ = await login(sim, http, sim.create_seller())
    sim.set_fault("close", seller=seller["unb"])
    with pytest.raises(websockets.ConnectionClosedOK) as closed:
        await mine.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert (await other.heartbeat())["code"] == 200
    await other.close()


async def test_silence_leaves_heartbeats_unanswered_but_the_connection_open(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    sim.set_fault("silence", seller=seller["unb"], seconds=0.6)
    with pytest.raises(TimeoutError):
        await online.heartbeat(timeout=0.4)
    assert sim.connections(seller=seller["unb"])[0]["heartbeats"] == 1  # counted, not answered
    await asyncio.sleep(0.3)
    assert (await online.heartbeat())["code"] == 200  # the window is over; the socket never closed


async def test_expire_token_closes_abnormally_and_a_set_cookie_merge_recovers(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    client, token, did = await login(sim, http, seller)
    sim.set_fault("expire_token", seller=seller["unb"])
    with pytest.raises(websockets.ConnectionClosedError) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    again = await BareClient.connect(sim, seller["cookie"])
    assert (await again.reg(token, did))["code"] != 200  # the old access token is gone

    stale = await token_call(http, sim, seller["cookie"], did)
    assert stale.json()["ret"] == ["FAIL_SYS_TOKEN_EXOIRED::令牌过期"]
    fresh = {c.split("=", 1)[0]: c.split(";", 1)[0].split("=", 1)[1] for c in stale.headers.get_list("set-cookie")}
    assert fresh.keys() == {"_m_h5_tk", "_m_h5_tk_enc"}
    merged = cookie_string({**cookie_map(seller["cookie"]), **fresh})
    recovered = await token_call(http, sim, merged, did)
    assert recovered.json()["ret"] == [SUCCESS]
    client = await BareClient.connect(sim, merged)
    assert (await client.reg(recovered.json()["data"]["accessToken"], did))["code"] == 200
    await client.close()


async def test_reject_reg_refuses_registration_until_cleared(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    did = device_id(seller["unb"])
    token = (await token_call(http, sim, seller["cookie"], did)).json()["data"]["accessToken"]
    sim.set_fault("reject_reg", seller=seller["unb"])
    client = await BareClient.connect(sim, seller["cookie"])
    started = time.monotonic()
    answer = await client.reg(token, did)
    assert answer["code"] == 401 and "rejected" in answer["body"]["reason"]
    with pytest.raises(websockets.ConnectionClosed):
        await client.recv(timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert sim.clear_faults() == 1
    client = await BareClient.connect(sim, seller["cookie"])
    assert (await client.reg(token, did))["code"] == 200
    await client.close()


async def test_refuse_fails_the_upgrade_with_503_and_keeps_live_connections(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    sim.set_fault("refuse", seller=seller["unb"], seconds=5)
    with pytest.raises(websockets.InvalidStatus) as refused:
        await BareClient.connect(sim, seller["cookie"])
    assert refused.value.response.status_code == 503
    assert (await online.heartbeat())["code"] == 200
    other = sim.create_seller()
    await (await BareClient.connect(sim, other["cookie"])).close()  # only this seller is refused


async def test_risk_control_answers_the_captcha_failure_with_a_url(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    sim.set_fault("risk_control", seller=seller["unb"])
    answer = (await token_call(http, sim, seller["cookie"], device_id(seller["unb"]))).json()
    assert answer["ret"] == ["FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM::哎哟喂,被挤爆啦,请稍后重试"]
    url = answer["data"]["url"]
    assert "punish?x5secdata=" in url and "action=captcha" in url
    assert (await http.get(url)).status_code == 200


async def test_session_expired_fails_token_login_check_and_registration(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    did = device_id(seller["unb"])
    token = (await token_call(http, sim, seller["cookie"], did)).json()["data"]["accessToken"]
    sim.set_fault("session_expired", seller=seller["unb"])
    answer = (await token_call(http, sim, seller["cookie"], did)).json()
    assert answer["ret"] == ["FAIL_SYS_SESSION_EXPIRED::Session过期"]
    login_check = await http.post(
        f"{sim.passport_url}newlogin/hasLogin.do",
        params={"appName": "xianyu", "fromSite": "77"},
        data={"hid": seller["unb"], "ltl": "true", "appName": "xianyu"},
        headers={"cookie": seller["cookie"]},
    )
    assert login_check.json()["content"]["success"] is False
    client = await BareClient.connect(sim, seller["cookie"])
    assert (await client.reg(token, did))["code"] != 200


async def test_slow_delays_every_answer(
    sim: Simulator, online: BareClient, seller: dict[str, Any], http: httpx.AsyncClient
) -> None:
    sim.set_fault("slow", seller=seller["unb"], delay=0.3, seconds=5)
    started = time.monotonic()
    assert (await online.heartbeat())["code"] == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    await token_call(http, sim, seller["cookie"], device_id(seller["unb"]))
    assert time.monotonic() - started >= 0.3
    sim.clear_faults()
    started = time.monotonic()
    await online.heartbeat()
    assert time.monotonic() - started < 0.2


async def test_garbage_pushes_malformed_frames_of_every_kind(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    sent = sim.set_fault("garbage", seller=seller["unb"])
    assert sent["affected"] == 1
    raws = [await online.recv() for _ in range(13)]
    kinds = set()
    for raw in raws:
        if isinstance(raw, bytes):
            kinds.add("binary")
            continue
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError:
            kinds.add("invalid json")
            continue
        if not isinstance(doc, dict):
            kinds.add("not an object")
        elif not isinstance(doc.get("headers"), dict):
            kinds.add("bad headers")
        elif "lwp" not in doc:
            kinds.add("stray response")
        else:
            data = doc["body"]["syncPushPackage"]["data"]
            kinds.add("bad items" if not isinstance(data, list) or not isinstance(data[0], dict) else "bad payload")
    expected = {"binary", "invalid json", "not an object", "bad headers", "stray response", "bad items", "bad payload"}
    assert kinds == expected
    assert (await online.heartbeat())["code"] == 200  # the connection is still fine


async def test_event_fault_with_seconds_also_hits_connections_that_register_meanwhile(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    sim.set_fault("close", seller=seller["unb"], code=4001, seconds=5)
    did = device_id(seller["unb"])
    token = (await token_call(http, sim, seller["cookie"], did)).json()["data"]["accessToken"]
    client = await BareClient.connect(sim, seller["cookie"])
    assert (await client.reg(token, did))["code"] == 200  # registered, then closed at once
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    sim.clear_faults()
    client, _, _ = await login(sim, http, seller)
    assert (await client.heartbeat())["code"] == 200
    await client.close()


async def test_fault_for_all_sellers_hits_everyone(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    clients = [(await login(sim, http, s))[0] for s in (seller, sim.create_seller(), sim.create_seller())]
    assert sim.set_fault("drop")["affected"] == 3
    for client in clients:
        with pytest.raises(websockets.ConnectionClosedError):
            await client.recv()


async def test_fault_window_ends_by_itself(sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]) -> None:
    sim.set_fault("risk_control", seller=seller["unb"], seconds=0.3)
    assert [f["kind"] for f in sim.active_faults()] == ["risk_control"]
    await asyncio.sleep(0.35)
    assert (await token_call(http, sim, seller["cookie"], device_id(seller["unb"]))).json()["ret"] == [SUCCESS]
    assert sim.active_faults() == []
