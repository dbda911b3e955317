"""The control API over HTTP: the documented bodies work, bad ones get a clear 400, nothing gets a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from xianyu_autoreply.simulator import Simulator

from .bare import BareClient, decode_payload


@pytest.fixture
def control(sim: Simulator) -> str:
    return sim.control_url


async def test_seller_item_message_and_sent_round_trip(
    sim: Simulator, http: httpx.AsyncClient, control: str, online: BareClient, seller: dict[str, Any]
) -> None:
    item = (await http.post(f"{control}items", json={"seller": seller["unb"], "title": "键盘", "price": 99})).json()
    assert item["price"] == "99.00" and len(item["item_id"]) >= 10
    body = {"seller": seller["unb"], "text": "包邮吗", "item_id": item["item_id"], "buyer_nick": "老李"}
    pushed = (await http.post(f"{control}messages", json=body)).json()
    assert pushed.keys() >= {"message_id", "chat_id", "buyer"} and pushed["delivered"] == 1
    await online.next_push()
    await online.request(online.send_frame(pushed["chat_id"], pushed["buyer"], "包邮"))
    sent = (await http.get(f"{control}sent", params={"seller": seller["unb"], "chat_id": pushed["chat_id"]})).json()
    assert [(s["chat_id"], s["to"], s["text"], s["content_type"]) for s in sent] == [
        (pushed["chat_id"], pushed["buyer"], "包邮", 1)
    ]
    assert sent[0].keys() >= {"chat_id", "to", "text", "content_type", "uuid", "at_ms"}
    conns = (await http.get(f"{control}connections", params={"seller": seller["unb"]})).json()
    assert conns[0].keys() >= {"did", "registered", "heartbeats", "acks", "opened_ms", "closed_ms"}


async def test_create_seller_with_a_given_unb_is_idempotent_and_adopts_a_cookie(
    http: httpx.AsyncClient, control: str
) -> None:
    first = (await http.post(f"{control}sellers", json={"unb": "2200000000001", "nick": "A"})).json()
    again = (await http.post(f"{control}sellers", json={"unb": "2200000000001"})).json()
    assert again == first
    stored = first["cookie"].replace(first["cookie"].split("cookie2=")[1].split(";")[0], "f" * 32)
    adopted = (await http.post(f"{control}sellers", json={"cookie": stored})).json()
    assert adopted["unb"] == "2200000000001" and f"cookie2={'f' * 32}" in adopted["cookie"]
    assert (await http.post(f"{control}sellers")).status_code == 200  # no body: a new seller


async def test_orders_shipments_and_faults_over_http(
    sim: Simulator, http: httpx.AsyncClient, control: str, seller: dict[str, Any]
) -> None:
    order = await http.post(
        f"{control}orders", json={"seller": seller["unb"], "buyer": "3300000000001", "status": "paid"}
    )
    assert order.status_code == 200 and len(order.json()["order_id"]) >= 10
    assert (await http.get(f"{control}shipments", params={"seller": seller["unb"]})).json() == []
    fault = (await http.post(f"{control}faults", json={"kind": "slow", "seconds": 5, "delay": 0.01})).json()
    assert fault["kind"] == "slow" and fault["lasting"] is True
    assert [f["kind"] for f in (await http.get(f"{control}faults")).json()] == ["slow"]
    assert (await http.delete(f"{control}faults")).json() == {"cleared": 1}
    echo = await http.post(f"{control}echo", json={"enabled": False, "seller": seller["unb"]})
    assert echo.json() == {"enabled": False, "seller": seller["unb"]}


async def test_typing_notice_and_raw_push_endpoints(
    sim: Simulator, http: httpx.AsyncClient, control: str, online: BareClient, seller: dict[str, Any]
) -> None:
    chat = sim.push_message(seller["unb"], "hi")
    await online.next_push()
    typing = await http.post(f"{control}typing", json={"seller": seller["unb"], "chat_id": chat["chat_id"]})
    assert typing.json() == {"delivered": 1}
    notice = await http.post(f"{control}notices", json={"seller": seller["unb"], "text": "发来一条新消息"})
    assert notice.json() == {"delivered": 1}
    raw = await http.post(f"{control}push", json={"seller": seller["unb"], "payloads": ["AAAA"]})
    assert raw.json() == {"delivered": 1}
    assert decode_payload((await online.next_push())["body"]["syncPushPackage"]["data"][0]["data"])[1][0]


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("sellers", {"unb": "abc"}, "unb"),
        ("sellers", {"nick": "x", "colour": "red"}, "colour"),
        ("sellers", {"cookie": "no unb here=1"}, "cookie"),
        ("items", {"seller": "{seller}", "price": 1}, "title"),
        ("items", {"seller": "{seller}", "title": "t", "price": "cheap"}, "price"),
        ("items", {"seller": "{seller}", "title": "t", "price": 1, "item_id": "123"}, "item_id"),
        ("items", {"seller": "999999999", "title": "t", "price": 1}, "unknown seller"),
        ("messages", {"seller": "{seller}"}, "text"),
        ("messages", {"seller": "{seller}", "text": ""}, "text"),
        ("messages", {"seller": "{seller}", "text": "x", "chat_id": "12345678901"}, "chat"),
        ("messages", {"seller": "{seller}", "text": "x", "item_id": "1234567890"}, "item"),
        ("messages", {"seller": "{seller}", "batch": []}, "batch"),
        ("messages", {"seller": "{seller}", "batch": [{"text": "x", "oops": 1}]}, "oops"),
        ("orders", {"seller": "{seller}", "status": "lost"}, "status"),
        ("orders", {"seller": "{seller}", "status": "paid", "order_id": "12"}, "order_id"),
        ("faults", {"kind": "meteor"}, "kind"),
        ("faults", {"kind": "drop", "code": 1000}, "code"),
        ("faults", {"kind": "close", "code": 1005}, "code"),
        ("faults", {"kind": "expire_token", "seconds": 3}, "once"),
        ("faults", {"kind": "slow", "seconds": -1}, "seconds"),
        ("faults", {"kind": "drop", "seller": "999999999"}, "unknown seller"),
        ("echo", {}, "enabled"),
        ("ai", {"status": 100}, "status"),
        ("push", {"seller": "{seller}", "payloads": []}, "payloads"),
        ("typing", {"seller": "{seller}", "chat_id": "1"}, "chat"),
    ],
)
async def test_bad_bodies_get_400_with_a_clear_error(
    http: httpx.AsyncClient, control: str, seller: dict[str, Any], path: str, body: dict[str, Any], says: str
) -> None:
    body = {k: (v.format(seller=seller["unb"]) if isinstance(v, str) else v) for k, v in body.items()}
    answer = await http.post(f"{control}{path}", json=body)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]


@pytest.mark.parametrize(
    "path",
    ["sellers", "items", "messages", "orders", "typing", "notices", "push", "faults", "echo", "ai"],
)
@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe", b'{"seller": {"a": 1}}', b"null"])
async def test_no_body_can_cause_a_server_error(http: httpx.AsyncClient, control: str, path: str, raw: bytes) -> None:
    answer = await http.post(f"{control}{path}", content=raw)
    assert answer.status_code in (200, 400), answer.text
    assert "error" in answer.json() or answer.status_code == 200


async def test_unknown_seller_in_a_query_is_404_and_unknown_endpoint_too(http: httpx.AsyncClient, control: str) -> None:
    for path in ("sent", "connections", "shipments", "items", "orders", "chats"):
        answer = await http.get(f"{control}{path}", params={"seller": "123456789"})
        assert answer.status_code == 404 and "unknown seller" in answer.json()["error"]
    assert (await http.get(f"{control}nowhere")).status_code == 404


async def test_index_and_stats(sim: Simulator, http: httpx.AsyncClient, control: str, online: BareClient) -> None:
    index = (await http.get(control)).json()
    assert index["ws_url"] == sim.ws_url and index["stats"]["registered"] == 1
    assert (await http.get(f"{control}stats")).json()["connections"] == 1
    assert (await http.get(f"{sim.base_url}/")).json()["mtop_url"] == sim.mtop_url
