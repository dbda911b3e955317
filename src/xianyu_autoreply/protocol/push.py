"""Push payloads (PROTOCOL.md §11-§12): base64 -> JSON or MessagePack -> typed events, and back.

Every item of `body.syncPushPackage.data[]` is decoded on its own, so one bad item never hides its neighbours.
MessagePack maps carry integer keys and JSON maps string keys; `_at` reads either, so nothing walks the whole tree.
Anything malformed raises `MalformedPush`, whatever the input: that is the only exception this module lets out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import msgpack
import orjson

from .errors import MalformedPush, ProtocolError
from .events import (
    BuyerMessage,
    ChatMessage,
    ContentType,
    Event,
    OrderEvent,
    OrderStatus,
    SellerMessage,
    SystemNotice,
    Typing,
    UnknownPayload,
)
from .notices import (
    BARGAIN_CARD_TITLE,
    ORDER_STATUS_BY_RED_REMINDER,
    ORDER_STATUS_BY_TEXT,
    RED_REMINDER_BY_ORDER_STATUS,
    REFUND_CARD_STATUS_BY_BUTTON,
    REFUND_CARD_TITLE,
    TEXT_BY_ORDER_STATUS,
    is_system_text,
)

MAX_PAYLOAD_CHARS = 1 << 20
_GOOFISH = "@goofish"
_ORDER_ID_PATTERNS = (
    re.compile(r"order_detail\?id=(\d{6,})"),
    re.compile(r"[?&]orderId=(\d{6,})"),
    re.compile(r"\bbizOrderId[=:](\d{10,})"),
)


@dataclass(frozen=True, slots=True)
class DecodedPush:
    """What one push frame carried: the events of its good items and an error for each bad one."""

    events: tuple[Event, ...]
    errors: tuple[MalformedPush, ...]


def decode_push(frame: Mapping[str, Any], *, own_id: str) -> DecodedPush:
    """Decode every `data[]` item of a push frame into events (`own_id` is the seller's `unb`)."""
    body = frame.get("body")
    package = body.get("syncPushPackage") if isinstance(body, Mapping) else None
    items = package.get("data") if isinstance(package, Mapping) else None
    if not isinstance(items, list):
        return DecodedPush((), (MalformedPush("push has no body.syncPushPackage.data list"),))
    events: list[Event] = []
    errors: list[MalformedPush] = []
    for index, item in enumerate(items):
        payload = item.get("data") if isinstance(item, Mapping) else None
        if not isinstance(payload, str):
            errors.append(MalformedPush(f"data[{index}] has no base64 `data` string"))
            continue
        try:
            events.append(decode_payload(payload, own_id=own_id))
        except MalformedPush as exc:
            errors.append(exc)
    return DecodedPush(tuple(events), tuple(errors))


def decode_payload(payload: str, *, own_id: str) -> Event:
    """Decode one base64 payload into an event; `MalformedPush` for anything unusable."""
    try:
        return _event_from(_load_payload(payload), own_id=own_id)
    except ProtocolError:
        raise
    except Exception as exc:
        raise MalformedPush(f"undecodable push payload: {type(exc).__name__}: {exc}") from exc


def _load_payload(payload: str) -> Any:
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise MalformedPush(f"payload of {len(payload)} characters exceeds {MAX_PAYLOAD_CHARS}")
    text = payload.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedPush(f"payload is not base64: {exc}") from exc
    if not raw:
        raise MalformedPush("payload is empty")
    if raw[:1] in (b"{", b"["):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # MessagePack may start with 0x7b/0x5b too (fixints); try it below
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False, ext_hook=_reject_ext, unicode_errors="strict")
    except ProtocolError:
        raise
    except Exception as exc:
        raise MalformedPush(f"payload is neither JSON nor MessagePack: {type(exc).__name__}: {exc}") from exc
    # msgpack decodes ext type -1 (Timestamp) itself instead of calling ext_hook. Its markers (fixext4/8, ext8 with
    # type 0xff) never occur in the UTF-8 text that fills real payloads, so the tree is only walked when they might.
    if any(marker in raw for marker in _TIMESTAMP_MARKERS) and _holds_timestamp(doc):
        raise MalformedPush("MessagePack ext type -1 (timestamp) is not part of the protocol")
    return doc


_TIMESTAMP_MARKERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _holds_timestamp(doc: Any) -> bool:
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, msgpack.Timestamp):
            return True
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return False


def _reject_ext(code: int, data: bytes) -> Any:
    raise MalformedPush(f"MessagePack ext type {code} is not part of the protocol")


def _at(obj: Any, *path: int | str) -> Any:
    """`obj[k1][k2]...` over maps keyed by int (MessagePack) or str (JSON); None when absent."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        value = obj.get(key)
        obj = obj.get(str(key)) if value is None else value
    return obj


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None


def _uid(value: Any) -> str | None:
    text = _text(value)
    return text.split("@", 1)[0] if text else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _event_from(doc: Any, *, own_id: str) -> Event:
    if not isinstance(doc, dict):
        raise MalformedPush(f"payload is a {type(doc).__name__}, not a map")
    if "chatType" in doc:
        return SystemNotice(text=_summary(doc.get("operation")), chat_id=None, message_id=None, created_ms=None)
    message = _at(doc, 1)
    extra = _at(doc, 3)
    if isinstance(message, list):
        first = message[0] if message else None
        user = _uid(_at(first, 1))
        if user is None:
            return UnknownPayload(summary="typing notice without a user")
        return Typing(user_id=user, chat_id=_uid(_at(first, 2)))
    if isinstance(message, str | bytes):
        reminder = _text(_at(extra, "redReminder")) or ""
        status = ORDER_STATUS_BY_RED_REMINDER.get(reminder)
        if status is None:
            return SystemNotice(text=reminder, chat_id=None, message_id=None, created_ms=None)
        buyer = _text(_at(extra, "userId")) or _uid(message)
        order_id = (
            _order_id_in(orjson.dumps(extra, default=str, option=orjson.OPT_NON_STR_KEYS).decode())
            if extra is not None
            else None
        )
        return OrderEvent(order_id, status, None, buyer, None, reminder, None, None)
    if isinstance(message, dict):
        return _chat_event(message, extra, own_id=own_id)
    return UnknownPayload(summary=f"payload map without a message (keys {sorted(map(str, doc))[:8]})")


def _chat_event(message: dict[Any, Any], extra: Any, *, own_id: str) -> Event:
    info = _at(message, 10)
    text = _text(_at(info, "reminderContent"))
    if text is None:
        return UnknownPayload(summary="message without reminderContent")
    chat_id = _uid(_at(message, 2)) or ""
    created = _int(_at(message, 5)) or 0
    sender = _text(_at(info, "senderUserId")) or _uid(_at(message, 1, 1)) or ""
    nick = _text(_at(info, "senderNick")) or _text(_at(info, "reminderTitle")) or ""
    url_query = _query(_text(_at(info, "reminderUrl")))
    item_id = url_query.get("itemId") or None
    content_type = _int(_at(message, 6, 3, 4)) or ContentType.TEXT
    card = _card(_at(message, 6, 3, 5)) if content_type == ContentType.CARD else None
    message_id = (
        _json_field(_at(info, "bizTag"), "messageId")
        or _json_field(_at(info, "extJson"), "messageId")
        or url_query.get("messageId")
        or _text(_at(message, 3))
        or _fallback_id(chat_id, created, text)
    )
    stripped = text.strip()
    status = ORDER_STATUS_BY_TEXT.get(stripped) or _card_status(card)
    if status is None and card is not None and isinstance(extra, dict):
        # A status banner over a card is an order change; over a typed text it is only context (the buyer asks).
        status = ORDER_STATUS_BY_RED_REMINDER.get(_text(_at(extra, "redReminder")) or "")
    buyer = sender if sender != own_id else None
    if status is not None:
        order_id = _order_id_in(orjson.dumps(card).decode()) if card else None
        order_id = order_id or _order_id_in(text)
        return OrderEvent(order_id, status, chat_id, buyer, item_id, text, message_id, created)
    if is_system_text(stripped) or (card is not None and _card_title(card) == BARGAIN_CARD_TITLE):
        return SystemNotice(text=text, chat_id=chat_id, message_id=message_id, created_ms=created)
    if _text(_at(extra, "needPush")) == "false":
        return SystemNotice(text=text, chat_id=chat_id, message_id=message_id, created_ms=created)
    cls = SellerMessage if sender == own_id else BuyerMessage
    return cls(message_id, chat_id, sender, nick, item_id, text, int(content_type), created)


_URL_PARAM = re.compile(r"[?&](itemId|messageId)=([^&#]*)")


def _query(url: str | None) -> dict[str, str]:
    """The `itemId`/`messageId` parameters of a `reminderUrl` (a regex: `parse_qs` was 40% of decode time)."""
    if not url:
        return {}
    return {name: unquote(value) for name, value in _URL_PARAM.findall(url) if value}


def _json_field(raw: Any, key: str) -> str | None:
    text = _text(raw)
    if not text or not text.startswith("{"):
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    value = doc.get(key) if isinstance(doc, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) and value != "" else None


def _fallback_id(chat_id: str, created: int, text: str) -> str:
    """Dedup key when the platform gave no message id: chat, create time and text."""
    digest = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]
    return f"{chat_id}:{created}:{digest}"


def _card(raw: Any) -> dict[str, Any] | None:
    text = _text(raw)
    if not text:
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _dig(doc: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _card_title(card: dict[str, Any]) -> str | None:
    for root in (card, _dig(card, "dynamicOperation", "changeContent")):
        title = _dig(root, "dxCard", "item", "main", "exContent", "title")
        if isinstance(title, str):
            return title
    return None


def _card_status(card: dict[str, Any] | None) -> OrderStatus | None:
    if card is None:
        return None
    ex = _dig(card, "dynamicOperation", "changeContent", "dxCard", "item", "main", "exContent")
    if isinstance(ex, dict) and ex.get("title") == REFUND_CARD_TITLE:
        return REFUND_CARD_STATUS_BY_BUTTON.get(str(_dig(ex, "button", "text")))
    return None


def _order_id_in(text: str) -> str | None:
    for pattern in _ORDER_ID_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def _summary(operation: Any) -> str:
    content = _dig(operation, "content")
    if isinstance(content, dict):
        arouse = content.get("sessionArouse")
        if isinstance(arouse, dict):
            scripts = arouse.get("arouseChatScriptInfo")
            if isinstance(scripts, list):
                return " / ".join(str(_dig(s, "chatScrip") or "") for s in scripts)
        return str(content.get("contentType", ""))
    return ""


# --- encoding: the other side of the wire (simulator, tests, benchmarks) ---------------------------------------


def encode_payload(doc: Mapping[Any, Any], *, as_json: bool = False) -> str:
    """Base64 of a payload map, as MessagePack (the platform's default) or as JSON."""
    raw = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) if as_json else msgpack.packb(doc, use_bin_type=True)
    return base64.b64encode(raw).decode("ascii")


def _message_map(
    *,
    sender_id: str,
    sender_nick: str,
    chat_id: str,
    message_id: str,
    created_ms: int,
    text: str,
    content_type: int,
    content_json: str,
    item_id: str | None,
    receiver_id: str,
    red_reminder: str | None = None,
) -> dict[int, Any]:
    url = f"fleamarket://message_chat?peerUserId={sender_id}&sid={chat_id}&messageId={message_id}&adv=no"
    if item_id:
        url = f"fleamarket://message_chat?itemId={item_id}&peerUserId={sender_id}&sid={chat_id}"
        url += f"&messageId={message_id}&adv=no"
    info = {
        "reminderContent": text,
        "reminderTitle": sender_nick,
        "senderUserId": sender_id,
        "reminderUrl": url,
        "bizTag": orjson.dumps({"sourceId": "S:1", "messageId": message_id}).decode(),
        "extJson": orjson.dumps({"messageId": message_id, "contentType": content_type}).decode(),
        "receiver": receiver_id,
        "senderUserType": "0",
        "sessionType": "1",
    }
    extra: dict[str, str] = {"needPush": "true"}
    if red_reminder:
        info["redReminder"] = red_reminder
        extra["redReminder"] = red_reminder
    content = {1: "", 2: text, 3: "", 4: content_type, 5: content_json}
    message = {
        1: {1: f"{sender_id}{_GOOFISH}"},
        2: f"{chat_id}{_GOOFISH}",
        3: f"{zlib.crc32(message_id.encode()):013d}.PNM",
        4: 0,
        5: created_ms,
        6: {1: 101, 3: content},
        7: 1,
        8: 1,
        9: 0,
        10: info,
        12: 1,
    }
    return {1: message, 3: extra}


def encode_chat_message(message: ChatMessage, *, receiver_id: str) -> str:
    """Base64 MessagePack of a conversation message as the platform pushes it (§11.3)."""
    content_json = orjson.dumps({"contentType": 1, "text": {"text": message.text}}).decode()
    doc = _message_map(
        sender_id=message.sender_id,
        sender_nick=message.sender_nick,
        chat_id=message.chat_id,
        message_id=message.message_id,
        created_ms=message.created_ms,
        text=message.text,
        content_type=message.content_type,
        content_json=content_json,
        item_id=message.item_id,
        receiver_id=receiver_id,
    )
    return encode_payload(doc)


def encode_order_card(
    *,
    order_id: str,
    status: OrderStatus,
    buyer_id: str,
    buyer_nick: str,
    seller_id: str,
    chat_id: str,
    item_id: str,
    message_id: str,
    created_ms: int,
) -> str:
    """Base64 MessagePack of the order card the buyer's side shows for `status` (§12, §19.15)."""
    text = TEXT_BY_ORDER_STATUS.get(status)
    if text is None:
        raise ValueError(f"no order card text for status {status}")
    target = f"fleamarket://order_detail?id={order_id}&role=seller"
    card = {
        "contentType": 26,
        "dxCard": {
            "item": {
                "main": {
                    "exContent": {
                        "title": text.strip("[]"),
                        "desc": "",
                        "button": {"text": "查看详情", "targetUrl": target},
                    },
                    "targetUrl": target,
                }
            },
            "template": {"name": "idlefish_message_trade_chat_card"},
        },
    }
    doc = _message_map(
        sender_id=buyer_id,
        sender_nick=buyer_nick,
        chat_id=chat_id,
        message_id=message_id,
        created_ms=created_ms,
        text=text,
        content_type=int(ContentType.CARD),
        content_json=orjson.dumps(card).decode(),
        item_id=item_id,
        receiver_id=seller_id,
        red_reminder=RED_REMINDER_BY_ORDER_STATUS.get(status),
    )
    return encode_payload(doc)


def encode_typing(*, user_id: str, chat_id: str) -> str:
    """Base64 MessagePack of a typing notice (list-shaped `1`)."""
    return encode_payload({1: [{1: f"{user_id}{_GOOFISH}", 2: f"{chat_id}{_GOOFISH}"}]})


def encode_system_notice(text: str) -> str:
    """Base64 of a plain-JSON assistant notice (`chatType`), the platform's non-chat payload."""
    scripts = {"arouseChatScriptInfo": [{"chatScrip": text}]}
    doc = {"chatType": 1, "operation": {"content": {"contentType": 8, "sessionArouse": scripts}}}
    return encode_payload(doc, as_json=True)


def payloads_of(frame: Mapping[str, Any]) -> Sequence[str]:
    """The base64 payload strings of a push frame (for tests and tools)."""
    items = _dig(frame, "body", "syncPushPackage", "data")
    if not isinstance(items, list):
        return []
    return [i["data"] for i in items if isinstance(i, dict) and isinstance(i.get("data"), str)]
