"""The simulator against PROTOCOL.md §3 and §7-§13, driven by hand with a bare `websockets` client.

Token over HTTP, /reg, ackDiff, heartbeat, a pushed message decoded from MessagePack and ACKed, a reply sent and
recorded, the echo of that reply: each checked frame by frame, as the platform's web clients would see it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import httpx
import pytest
import websockets

from xianyu_autoreply.simulator import Simulator

from .bare import (
    IM_APP_KEY,
    SUCCESS,
    TOKEN_API,
    BareClient,
    cookie_map,
    decode_payload,
    device_id,
    eventually,
    login,
    mtop_params,
    new_mid,
    token_call,
)


def test_seller_cookie_has_every_key_the_clients_read(seller: dict[str, Any]) -> None:
    cookies = cookie_map(seller["cookie"])
    assert {"unb", "_m_h5_tk", "_m_h5_tk_enc", "cookie2", "cna", "XSRF-TOKEN", "t", "sgcookie"} <= cookies.keys()
    assert cookies["unb"] == seller["unb"] and seller["unb"].isdigit()
    token, expiry = cookies["_m_h5_tk"].split("_")
    assert len(token) == 32 and int(token, 16) >= 0 and int(expiry) > time.time() * 1000


async def test_token_call_answers_the_documented_envelope(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    response = await token_call(http, sim, seller["cookie"], device_id(seller["unb"]))
    assert response.status_code == 200
    assert "set-cookie" not in response.headers  # §19.3: no Set-Cookie on success
    answer = response.json()
    assert answer["api"] == TOKEN_API and answer["v"] == "1.0" and answer["ret"] == [SUCCESS]
    assert answer["data"]["accessToken"] and answer["data"]["refreshToken"]
    assert answer["data"]["accessTokenExpiredTime"] == "86400000"


async def test_token_call_accepts_t_in_whole_seconds(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    did = device_id(seller["unb"])
    data = '{"appKey":"' + IM_APP_KEY + '","deviceId":"' + did + '"}'
    params = mtop_params(TOKEN_API, data, seller["cookie"], t=str(int(time.time()) * 1000))
    response = await http.post(
        f"{sim.mtop_url}{TOKEN_API}/1.0/", params=params, data={"data": data}, headers={"cookie": seller["cookie"]}
    )
    assert response.json()["ret"] == [SUCCESS]


async def test_reg_ackdiff_and_heartbeat_are_answered_200_with_their_mid(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    did = device_id(seller["unb"])
    token = (await token_call(http, sim, seller["cookie"], did)).json()["data"]["accessToken"]
    client = await BareClient.connect(sim, seller["cookie"])
    reg = await client.reg(token, did)
    assert reg["code"] == 200 and "lwp" not in reg
    assert reg["headers"]["sid"]
    ack_diff = await client.ack_diff()
    assert ack_diff["code"] == 200
    for _ in range(3):
        beat = await client.heartbeat()
        assert beat["code"] == 200
    [conn] = sim.connections(seller=seller["unb"])
    assert conn["did"] == did and conn["registered"] is True and conn["heartbeats"] == 3
    assert conn["closed_ms"] is None and conn["opened_ms"] <= time.time() * 1000
    await client.close()
    [conn] = await eventually(lambda: [c for c in sim.connections(seller=seller["unb"]) if c["closed_ms"]])
    assert conn["close_code"] == 1000 and conn["closed_by"] == "client"


async def test_upgrade_with_duplicate_host_and_connection_headers_is_accepted(
    sim: Simulator, seller: dict[str, Any]
) -> None:
    """PROTOCOL §6.1: the websockets library sends the extra Host/Connection headers a second time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    key = base64.b64encode(b"0123456789abcdef").decode()
    head = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{sim.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: Python/3.11 websockets/16\r\n"
        f"Host: wss-goofish.dingtalk.com\r\nConnection: Upgrade\r\nUser-Agent: Chrome/133\r\n"
        f"Cookie: {seller['cookie']}\r\n\r\n"
    )
    writer.write(head.encode())
    status = await asyncio.wait_for(reader.readline(), 3)
    assert status.startswith(b"HTTP/1.1 101"), status
    writer.close()


async def test_pushed_message_decodes_as_msgpack_and_its_ack_is_counted(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    item = sim.create_item(seller["unb"], title="九成新 iPhone", price="2999")
    pushed = sim.push_message(seller["unb"], "还在吗？", item_id=item["item_id"], buyer_nick="小王")
    assert pushed["delivered"] == 1
    push = await online.next_push()
    assert push["headers"]["mid"] and push["headers"]["sid"] and push["headers"]["app-key"] == IM_APP_KEY
    [entry] = push["body"]["syncPushPackage"]["data"]
    message = decode_payload(entry["data"])
    assert message[1][2] == f"{pushed['chat_id']}@goofish"
    assert abs(message[1][5] - time.time() * 1000) < 5000
    info = message[1][10]
    assert info["reminderContent"] == "还在吗？" and info["reminderTitle"] == "小王"
    assert info["senderUserId"] == pushed["buyer"] and info["senderUserId"] != seller["unb"]
    assert f"itemId={item['item_id']}" in info["reminderUrl"]
    assert json.loads(info["bizTag"])["messageId"] == pushed["message_id"]
    assert message[3]["needPush"] == "true"
    await online.ack(push)
    await online.ack(push)  # a B-style second ACK is tolerated, not counted twice
    await online.heartbeat()  # the ACKs were read before this request was
    [conn] = sim.connections(seller=seller["unb"])
    assert conn["acks"] == 1 and conn["duplicate_acks"] == 1 and conn["unacked"] == 0


async def test_reply_is_answered_recorded_and_echoed_to_the_seller(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    pushed = sim.push_message(seller["unb"], "多少钱")
    await online.next_push()
    frame = online.send_frame(pushed["chat_id"], pushed["buyer"], "你好，200元")
    answer = await online.request(frame)
    assert answer["code"] == 200 and answer["body"]["messageId"]
    [sent] = sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])
    assert sent["text"] == "你好，200元" and sent["to"] == pushed["buyer"] and sent["content_type"] == 1
    assert sent["uuid"] == frame["body"][0]["uuid"] and sent["at_ms"] > 0
    echo = decode_payload((await online.next_push())["body"]["syncPushPackage"]["data"][0]["data"])
    assert echo[1][10]["senderUserId"] == seller["unb"] and echo[1][10]["reminderContent"] == "你好，200元"
    assert echo[1][2] == f"{pushed['chat_id']}@goofish"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"message": {"cid": "123"}}, "cid"),
        ({"message": {"cid": "99999999999@goofish"}}, "no conversation"),
        ({"receivers": {"actualReceivers": ["1@goofish"]}}, "actualReceivers"),
        ({"message": {"content": {"contentType": 1, "custom": {"type": 1, "data": ""}}}}, "contentType"),
        ({"message": {"content": {"contentType": 101, "custom": {"type": 2, "data": ""}}}}, "custom"),
        ({"message": {"content": {"contentType": 101, "custom": {"type": 1, "data": "!!"}}}}, "base64"),
        ({"body": {"not": "a list"}}, "body"),
    ],
)
async def test_malformed_send_is_refused_with_a_reason_and_recorded_as_rejected(
    sim: Simulator, online: BareClient, seller: dict[str, Any], change: dict[str, Any], reason: str
) -> None:
    pushed = sim.push_message(seller["unb"], "hi")
    answer = await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "x", **change))
    assert answer["code"] == 400 and reason in answer["body"]["reason"]
    assert sim.sent(seller=seller["unb"]) == []
    [rejected] = sim.rejected(seller=seller["unb"])
    assert reason in rejected["reason"]


async def test_create_conversation_returns_the_chat_of_buyer_and_item(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    item = sim.create_item(seller["unb"], title="相机", price=800, item_id="891198795482")
    pushed = sim.push_message(seller["unb"], "hi", item_id=item["item_id"])
    body = [
        {
            "pairFirst": f"{pushed['buyer']}@goofish",
            "pairSecond": f"{seller['unb']}@goofish",
            "bizType": "1",
            "extension": {"itemId": item["item_id"]},
            "ctx": {"appVersion": "1.0", "platform": "web"},
        }
    ]
    answer = await online.request(
        {"lwp": "/r/SingleChatConversation/create", "headers": {"mid": new_mid()}, "body": body}
    )
    assert answer["code"] == 200
    assert answer["body"]["singleChatConversation"]["cid"] == f"{pushed['chat_id']}@goofish"


async def test_unknown_request_paths_are_still_answered(online: BareClient) -> None:
    answer = await online.request({"lwp": "/r/SyncStatus/getState", "headers": {"mid": new_mid()}, "body": [{}]})
    assert answer["code"] == 200


async def test_a_frame_of_one_mebibyte_is_accepted(online: BareClient) -> None:
    frame = {"lwp": "/r/Conversation/listNewestPagination", "headers": {"mid": new_mid()}, "body": ["x"]}
    padding = (1 << 20) - len(json.dumps(frame))
    frame["body"] = ["x" * (padding + 1)]
    assert len(json.dumps(frame)) == 1 << 20
    assert (await online.request(frame))["code"] == 200


@pytest.mark.parametrize("problem", ["wrong token", "wrong device", "other seller's token"])
async def test_reg_with_an_invalid_token_is_refused_and_closed_within_a_second(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any], problem: str
) -> None:
    did = device_id(seller["unb"])
    token = (await token_call(http, sim, seller["cookie"], did)).json()["data"]["accessToken"]
    if problem == "wrong token":
        token = "not-a-token"
    elif problem == "wrong device":
        did = device_id(seller["unb"])
    else:
        other = sim.create_seller()
        other_did = device_id(other["unb"])
        token = (await token_call(http, sim, other["cookie"], other_did)).json()["data"]["accessToken"]
    client = await BareClient.connect(sim, seller["cookie"])
    started = time.monotonic()
    answer = await client.reg(token, did)
    assert answer["code"] != 200
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv(timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert not any(c["registered"] for c in sim.connections(seller=seller["unb"]))


async def test_pushes_go_only_to_registered_connections(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    bystander = await BareClient.connect(sim, seller["cookie"])  # upgraded, never registered
    client, _, _ = await login(sim, http, seller)
    assert sim.push_message(seller["unb"], "hello")["delivered"] == 1
    await client.next_push()
    with pytest.raises(TimeoutError):
        await bystander.next_push(timeout=0.3)
    await bystander.close()
    await client.close()


async def test_connection_idle_longer_than_the_timeout_is_closed_and_a_busy_one_is_not(
    http: httpx.AsyncClient,
) -> None:
    async with Simulator(idle_timeout=0.6) as sim:
        seller = sim.create_seller()
        idle, _, _ = await login(sim, http, seller)
        busy, _, _ = await login(sim, http, seller)
        for _ in range(8):
            await busy.heartbeat()
            await asyncio.sleep(0.15)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await idle.recv(timeout=2.0)
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "idle timeout"
        assert (await busy.heartbeat())["code"] == 200
        await busy.close()


async def test_protocol_pings_are_answered(online: BareClient) -> None:
    pong = await online.ws.ping()
    await asyncio.wait_for(pong, 1.0)


async def test_a_send_before_registration_is_refused(sim: Simulator, seller: dict[str, Any]) -> None:
    pushed = sim.push_message(seller["unb"], "hi")
    client = await BareClient.connect(sim, seller["cookie"])
    answer = await client.request(client.send_frame(pushed["chat_id"], pushed["buyer"], "x"))
    assert answer["code"] == 401 and sim.sent(seller=seller["unb"]) == []
    await client.close()
