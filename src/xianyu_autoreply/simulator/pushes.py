"""What the simulator pushes: chat messages, echoes and order cards as base64 payloads, and malformed frames.

Payloads come from the codec (`protocol.push`), so the simulator speaks exactly the wire format the client decodes;
the malformed frames are built here by hand, because breaking the format on purpose is the simulator's job alone.
"""

from __future__ import annotations

import base64
from typing import Any

import msgpack

from ..protocol import (
    ChatMessage,
    OrderStatus,
    encode_chat_message,
    encode_frame,
    encode_order_card,
    encode_payload,
    new_mid,
    push_frame,
)
from .world import Buyer, Chat, Order

GOOFISH = "@goofish"


def chat_payload(
    chat: Chat,
    *,
    sender: str,
    sender_nick: str,
    receiver: str,
    text: str,
    message_id: str,
    created_ms: int,
    content_type: int = 1,
) -> str:
    """Base64 MessagePack of one conversation message (buyer's words, the seller's echo, or the seller typing)."""
    message = ChatMessage(
        message_id=message_id,
        chat_id=chat.chat_id,
        sender_id=sender,
        sender_nick=sender_nick,
        item_id=chat.item_id,
        text=text,
        content_type=content_type,
        created_ms=created_ms,
    )
    return encode_chat_message(message, receiver_id=receiver)


def order_payload(order: Order, *, buyer: Buyer, message_id: str, created_ms: int) -> str:
    """Base64 MessagePack of the order card matching the order's status (sent from the buyer, PROTOCOL §19.15)."""
    return encode_order_card(
        order_id=order.order_id,
        status=OrderStatus(order.status),
        buyer_id=buyer.uid,
        buyer_nick=buyer.nick,
        seller_id=order.seller,
        chat_id=order.chat_id,
        item_id=order.item_id,
        message_id=message_id,
        created_ms=created_ms,
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _push_with(sid: str, data: Any) -> tuple[str, str]:
    frame = push_frame([], sid=sid)
    frame["body"]["syncPushPackage"]["data"] = data
    return encode_frame(frame), frame["headers"]["mid"]


def _item(payload: str) -> dict[str, Any]:
    return {"bizType": 40, "objectType": 40000, "streamId": "garbage", "data": payload}


def garbage_frames(sid: str) -> list[tuple[str | bytes, str | None]]:
    """One of each kind of malformed frame, with the push `mid` to expect an ACK for (None when it has none).

    Invalid JSON, a JSON array, bad base64, truncated MessagePack, MessagePack with an ext type, a non-map payload,
    a map of the wrong shape, non-object `data[]` items, `data` not a list, `headers` not an object, a stray
    response, and a binary frame. None of them may take a client down.
    """
    chat_like = msgpack.packb({1: {2: f"1{GOOFISH}", 5: 1, 10: {"reminderContent": "truncated"}}}, use_bin_type=True)
    ext_typed = msgpack.packb({1: msgpack.ExtType(5, b"\x00\x01\x02")}, use_bin_type=True)
    frames: list[tuple[str | bytes, str | None]] = [
        ('{"lwp": "/s/para", "headers": {"mid": "', None),
        ('[{"lwp": "/s/para"}, 1, null]', None),
        _push_with(sid, [_item("@@@ not base64 @@@")]),
        _push_with(sid, [_item(_b64(chat_like[: len(chat_like) // 2]))]),
        _push_with(sid, [_item(_b64(ext_typed))]),
        _push_with(sid, [_item(_b64(msgpack.packb([1, 2, 3])))]),
        _push_with(sid, [_item(_b64(msgpack.packb({1: 12345, 3: "not a map"})))]),
        _push_with(sid, [_item(encode_payload({"unexpected": ["shape"]}, as_json=True))]),
        _push_with(sid, ["not an object", 5, None]),
        _push_with(sid, "data should be a list"),
        (encode_frame({"lwp": "/s/para", "headers": "not an object", "body": {"syncPushPackage": {}}}), None),
        (encode_frame({"code": 200, "headers": {"mid": new_mid()}}), None),
        (b"\x00\xff\xfebinary garbage\x80", None),
    ]
    return frames
