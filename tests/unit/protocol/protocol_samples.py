"""Hand-made wire samples for the protocol tests (PROTOCOL.md §11.3, §12), built without the code under test.

Payload maps are written out key by key as the platform sends them (integer keys for MessagePack), so that the
decoder is checked against the protocol document and not against our own encoder.
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack
import orjson

SELLER = "2200000000001"
BUYER = "2200000000777"
CHAT = "48761234567"
ITEM = "891198795482"
ORDER = "3312345678901234567"
MESSAGE_ID = "8c5b1e5c0a7d4b3f9e2a1c0d9b8a7f6e"
CREATED = 1_742_458_817_389
NICK = "小王同学"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def packed(doc: Any) -> str:
    """Base64 MessagePack, as the platform pushes chat messages."""
    return b64(msgpack.packb(doc, use_bin_type=True))


def as_json(doc: Any) -> str:
    """Base64 JSON with string keys (the plain-JSON payload variant)."""
    return b64(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))


def stringify_keys(doc: Any) -> Any:
    """The same document with every map key turned into a string, as a JSON payload would carry it."""
    if isinstance(doc, dict):
        return {str(k): stringify_keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [stringify_keys(v) for v in doc]
    return doc


def chat_url(*, item_id: str | None = ITEM, peer: str = BUYER, message_id: str | None = MESSAGE_ID) -> str:
    url = "fleamarket://message_chat?"
    if item_id is not None:
        url += f"itemId={item_id}&"
    url += f"peerUserId={peer}&peerUserNick=x***y&sid={CHAT}"
    if message_id is not None:
        url += f"&messageId={message_id}"
    return url + "&adv=no"


def text_content(text: str) -> str:
    return orjson.dumps({"contentType": 1, "text": {"text": text}}).decode()


def message_doc(
    text: str = "你好，这个还在吗？",
    *,
    sender: str = BUYER,
    nick: str | None = NICK,
    sender_nick: str | None = None,
    chat: str = CHAT,
    created: int = CREATED,
    content_type: int = 1,
    content_json: str | None = None,
    url: str | None = None,
    biz_tag: str | None = None,
    ext_json: str | None = None,
    server_id: str | None = "3712345678901.PNM",
    need_push: str = "true",
    red_reminder: str | None = None,
    drop: tuple[str, ...] = (),
) -> dict[int, Any]:
    """A §11.3 chat message map with integer keys; `drop` removes named `1.10` fields."""
    info: dict[str, str] = {
        "reminderContent": text,
        "reminderTitle": nick or "",
        "senderUserId": sender,
        "reminderUrl": url if url is not None else chat_url(peer=sender),
        "bizTag": biz_tag
        if biz_tag is not None
        else orjson.dumps({"sourceId": "S:1", "messageId": MESSAGE_ID}).decode(),
        "extJson": ext_json
        if ext_json is not None
        else orjson.dumps({"messageId": "ext-id", "contentType": 1}).decode(),
        "receiver": SELLER,
        "senderUserType": "0",
        "sessionType": "1",
        "updateHead": "true",
        "closePushReceiver": "false",
        "closeUnreadNumber": "false",
    }
    if nick is None:
        del info["reminderTitle"]
    if sender_nick is not None:
        info["senderNick"] = sender_nick
    for key in drop:
        info.pop(key, None)
    message: dict[int, Any] = {
        1: {1: f"{sender}@goofish"},
        2: f"{chat}@goofish",
        3: server_id,
        4: 0,
        5: created,
        6: {1: 101, 3: {1: "", 2: text, 3: "", 4: content_type, 5: content_json or text_content(text)}},
        7: 1,
        8: 1,
        9: 0,
        10: info,
        12: 1,
    }
    if server_id is None:
        del message[3]
    extra: dict[str, str] = {"needPush": need_push}
    if red_reminder is not None:
        extra["redReminder"] = red_reminder
    return {1: message, 3: extra}


def order_card_json(
    title: str,
    *,
    order_id: str | None = ORDER,
    button_url: str | None = None,
    main_url: str | None = None,
) -> str:
    """The content JSON (`1.6.3.5`) of an order card (§11.3, contentType 26)."""
    target = (
        main_url
        if main_url is not None
        else (f"fleamarket://order_detail?id={order_id}&role=seller" if order_id else "")
    )
    card = {
        "contentType": 26,
        "dxCard": {
            "item": {
                "main": {
                    "exContent": {
                        "title": title,
                        "desc": "",
                        "button": {"text": "去发货", "targetUrl": button_url if button_url is not None else target},
                    },
                    "targetUrl": target,
                }
            },
            "template": {"name": "idlefish_message_trade_chat_card", "version": "1"},
        },
    }
    return orjson.dumps(card).decode()


def refund_card_json(button_text: str, *, order_id: str = ORDER) -> str:
    """A refund card: the state lives in `dynamicOperation.changeContent` (§12.4)."""
    target = f"fleamarket://order_detail?id={order_id}&role=seller"
    change = {
        "dxCard": {
            "item": {
                "main": {
                    "exContent": {
                        "title": "我发起了退款申请",
                        "desc": "退款金额 ¥12.00",
                        "button": {"text": button_text, "targetUrl": target},
                    },
                    "targetUrl": target,
                }
            }
        }
    }
    card = {"contentType": 26, "dynamicOperation": {"changeContent": change}}
    return orjson.dumps(card).decode()


def push_frame_of(payloads: list[str], *, mid: str = "1231742458817389 0", sid: str = "sid-1") -> dict[str, Any]:
    """A §19.14 push frame written out by hand."""
    items = [{"bizType": 40, "objectType": 40000, "streamId": f"s{i}", "data": p} for i, p in enumerate(payloads)]
    return {
        "lwp": "/s/para",
        "headers": {"mid": mid, "sid": sid, "app-key": "444e9908a51d1cb236a27862abc769c9", "dt": "j"},
        "body": {"syncPushPackage": {"data": items, "maxPts": CREATED * 1000, "timestamp": CREATED}},
    }
