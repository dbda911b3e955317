"""Pushes: several messages in one frame, fan-out to every connection, the echo switch, order cards, notices."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from xianyu_autoreply.simulator import Simulator

from .bare import BareClient, decode_payload, login


def items_of(push: dict[str, Any]) -> list[Any]:
    return [decode_payload(entry["data"]) for entry in push["body"]["syncPushPackage"]["data"]]


async def test_a_batch_goes_out_as_one_frame_with_one_item_per_message(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    pushed = sim.push_messages(seller["unb"], [{"text": "one"}, {"text": "two"}, {"text": "three"}])
    assert [p["delivered"] for p in pushed] == [1, 1, 1]
    push = await online.next_push()
    texts = [m[1][10]["reminderContent"] for m in items_of(push)]
    assert texts == ["one", "two", "three"]
    assert len({p["chat_id"] for p in pushed}) == 3  # no buyer given: three new buyers


async def test_a_batch_over_http_is_one_frame_too(
    sim: Simulator, online: BareClient, seller: dict[str, Any], http: httpx.AsyncClient
) -> None:
    first = sim.push_message(seller["unb"], "first")
    await online.next_push()
    body = {"seller": seller["unb"], "batch": [{"text": "a", "chat_id": first["chat_id"]}, {"text": "b"}]}
    answer = await http.post(f"{sim.control_url}messages", json=body)
    assert answer.status_code == 200 and [m["delivered"] for m in answer.json()] == [1, 1]
    assert answer.json()[0]["chat_id"] == first["chat_id"]
    assert [m[1][10]["reminderContent"] for m in items_of(await online.next_push())] == ["a", "b"]


async def test_every_registered_connection_of_the_seller_gets_each_push(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    clients = [(await login(sim, http, seller))[0] for _ in range(3)]
    assert len({c["did"] for c in sim.connections(seller=seller["unb"])}) == 3
    assert sim.push_message(seller["unb"], "hello all")["delivered"] == 3
    for client in clients:
        push = await client.next_push()
        assert items_of(push)[0][1][10]["reminderContent"] == "hello all"
        await client.ack(push)
        await client.heartbeat()
    assert [c["acks"] for c in sim.connections(seller=seller["unb"])] == [1, 1, 1]


async def test_a_send_is_echoed_to_all_connections_of_the_seller(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    sender, _, _ = await login(sim, http, seller)
    watcher, _, _ = await login(sim, http, seller)
    pushed = sim.push_message(seller["unb"], "在吗")
    await sender.next_push()
    await watcher.next_push()
    await sender.request(sender.send_frame(pushed["chat_id"], pushed["buyer"], "在的"))
    for client in (sender, watcher):
        echo = items_of(await client.next_push())[0]
        assert echo[1][10]["senderUserId"] == seller["unb"] and echo[1][10]["reminderContent"] == "在的"


@pytest.mark.parametrize("scope", ["everyone", "this seller"])
async def test_echo_can_be_switched_off(sim: Simulator, online: BareClient, seller: dict[str, Any], scope: str) -> None:
    sim.set_echo(False, seller=None if scope == "everyone" else seller["unb"])
    pushed = sim.push_message(seller["unb"], "在吗")
    await online.next_push()
    assert (await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "在的")))["code"] == 200
    with pytest.raises(TimeoutError):
        await online.next_push(timeout=0.3)
    assert len(sim.sent(seller=seller["unb"])) == 1
    sim.set_echo(True, seller=None if scope == "everyone" else seller["unb"])
    await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "again"))
    assert items_of(await online.next_push())[0][1][10]["reminderContent"] == "again"


async def test_echo_starts_switched_off_when_asked(http: httpx.AsyncClient) -> None:
    async with Simulator(echo_sends=False) as sim:
        seller = sim.create_seller()
        client, _, _ = await login(sim, http, seller)
        pushed = sim.push_message(seller["unb"], "在吗")
        await client.next_push()
        await client.request(client.send_frame(pushed["chat_id"], pushed["buyer"], "在的"))
        with pytest.raises(TimeoutError):
            await client.next_push(timeout=0.3)
        await client.close()


async def test_a_message_typed_by_the_seller_elsewhere_is_pushed_from_the_seller(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    first = sim.push_message(seller["unb"], "便宜点")
    await online.next_push()
    typed = sim.push_message(seller["unb"], "最低180", chat_id=first["chat_id"], from_seller=True)
    message = items_of(await online.next_push())[0]
    assert message[1][10]["senderUserId"] == seller["unb"] and message[1][10]["reminderContent"] == "最低180"
    assert typed["chat_id"] == first["chat_id"] and sim.sent(seller=seller["unb"]) == []


async def test_a_message_created_in_the_past_keeps_its_time(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    sim.push_message(seller["unb"], "old", created_ms=1_700_000_000_000, message_id="fixed-id-1")
    message = items_of(await online.next_push())[0]
    assert message[1][5] == 1_700_000_000_000
    assert json.loads(message[1][10]["bizTag"])["messageId"] == "fixed-id-1"


@pytest.mark.parametrize(
    ("status", "text"),
    [
        ("created", "[我已拍下，待付款]"),
        ("paid", "[我已付款，等待你发货]"),
        ("shipped", "[你已发货]"),
        ("completed", "[买家确认收货，交易成功]"),
        ("closed", "[你关闭了订单，钱款已原路退返]"),
        ("refunded", "[退款成功，钱款已原路退返]"),
    ],
)
async def test_order_status_pushes_the_matching_card(
    sim: Simulator, online: BareClient, seller: dict[str, Any], status: str, text: str
) -> None:
    item = sim.create_item(seller["unb"], title="会员卡", price="9.9")
    order = sim.push_order(seller["unb"], status=status, item_id=item["item_id"])
    assert len(order["order_id"]) >= 10 and order["delivered"] == 1
    message = items_of(await online.next_push())[0]
    assert message[1][10]["reminderContent"] == text
    assert message[1][10]["senderUserId"] == order["buyer"]
    assert message[1][6][3][4] == 26
    card = json.loads(message[1][6][3][5])
    assert (
        card["dxCard"]["item"]["main"]["targetUrl"] == f"fleamarket://order_detail?id={order['order_id']}&role=seller"
    )


async def test_an_order_moves_through_its_statuses_in_one_chat(sim: Simulator, seller: dict[str, Any]) -> None:
    created = sim.push_order(seller["unb"], status="created")
    paid = sim.push_order(seller["unb"], status="paid", order_id=created["order_id"])
    assert paid["chat_id"] == created["chat_id"] and paid["buyer"] == created["buyer"]
    assert [o["status"] for o in sim.orders(seller["unb"])] == ["paid"]


async def test_typing_notice_and_raw_payloads_are_pushed(
    sim: Simulator, online: BareClient, seller: dict[str, Any]
) -> None:
    chat = sim.push_message(seller["unb"], "hi")
    await online.next_push()
    assert sim.push_typing(seller["unb"], chat_id=chat["chat_id"]) == 1
    typing = items_of(await online.next_push())[0]
    assert typing[1][0][1] == f"{chat['buyer']}@goofish"
    assert sim.push_notice(seller["unb"], "AI正在帮你回复消息") == 1
    entry = (await online.next_push())["body"]["syncPushPackage"]["data"][0]["data"]
    assert json.loads(base64.b64decode(entry))["chatType"] == 1  # the plain-JSON payload of §11.2
    raw = base64.b64encode(b"anything").decode()
    assert sim.push_raw(seller["unb"], [raw, raw]) == 1
    assert [e["data"] for e in (await online.next_push())["body"]["syncPushPackage"]["data"]] == [raw, raw]


async def test_nobody_online_means_nothing_delivered(sim: Simulator, seller: dict[str, Any]) -> None:
    assert sim.push_message(seller["unb"], "anyone?")["delivered"] == 0


async def test_permessage_deflate_can_be_switched_on(http: httpx.AsyncClient) -> None:
    async with Simulator(compress=True) as sim:
        seller = sim.create_seller()
        client, _, _ = await login(sim, http, seller)
        assert client.ws.response is not None
        assert "permessage-deflate" in client.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        sim.push_message(seller["unb"], "压缩")
        assert items_of(await client.next_push())[0][1][10]["reminderContent"] == "压缩"
        await client.close()
