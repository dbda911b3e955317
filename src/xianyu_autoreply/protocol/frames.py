"""LWP frames over the IM WebSocket (PROTOCOL.md §6-§10, §13): build what a client sends, classify what arrives.

Frames are JSON objects. A request has `lwp`, `headers.mid` and maybe `body`; a response has `code` and echoes the
request's `mid`; a push has `lwp` and a `body.syncPushPackage`; an ACK is a `code` with the push's headers.
The server side (the simulator) uses the same builders for what it answers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any

import orjson

from .content import Content, encode_content
from .errors import MalformedFrame
from .ids import new_mid, new_uuid, now_ms
from .mtop import IM_APP_KEY

MAX_FRAME_BYTES = 1 << 20

LWP_REG = "/reg"
LWP_ACK_DIFF = "/r/SyncStatus/ackDiff"
LWP_HEARTBEAT = "/!"
LWP_SEND = "/r/MessageSend/sendByReceiverScope"
LWP_CREATE_CHAT = "/r/SingleChatConversation/create"
LWP_PUSH = "/s/para"

REG_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/133.0.0.0 "
    "Safari/537.36 DingTalk(2.1.5) OS(Windows/10) Browser(Chrome/133.0.0.0) DingWeb/2.1.5 IMPaaS DingWeb/2.1.5"
)
GOOFISH = "@goofish"

Frame = dict[str, Any]


def encode_frame(frame: Mapping[str, Any]) -> str:
    """Serialise a frame for a text WebSocket message."""
    return orjson.dumps(frame).decode()


def _request(lwp: str, body: Any = None, *, mid: str | None = None, **headers: str) -> Frame:
    frame: Frame = {"lwp": lwp, "headers": {**headers, "mid": mid or new_mid()}}
    if body is not None:
        frame["body"] = body
    return frame


def reg_frame(*, token: str, device_id: str, mid: str | None = None) -> Frame:
    """`/reg`: register this connection with the access token bound to the device id."""
    headers = {
        "cache-header": "app-key token ua wv",
        "app-key": IM_APP_KEY,
        "token": token,
        "ua": REG_UA,
        "dt": "j",
        "wv": "im:3,au:3,sy:6",
        "sync": "0,0;0;0;",
        "did": device_id,
    }
    return _request(LWP_REG, mid=mid, **headers)


def ack_diff_frame(*, at_ms: int | None = None, mid: str | None = None) -> Frame:
    """`/r/SyncStatus/ackDiff`: declare us synced up to now, so no backlog is pushed."""
    ms = now_ms() if at_ms is None else at_ms
    body = [
        {
            "pipeline": "sync",
            "tooLong2Tag": "PNM,1",
            "channel": "sync",
            "topic": "sync",
            "highPts": 0,
            "pts": ms * 1000,
            "seq": 0,
            "timestamp": ms,
        }
    ]
    return _request(LWP_ACK_DIFF, body, mid=mid)


def heartbeat_frame(*, mid: str | None = None) -> Frame:
    """`/!`: the application heartbeat; the server answers it with code 200."""
    return _request(LWP_HEARTBEAT, mid=mid)


def ack_frame(push: Mapping[str, Any]) -> Frame | None:
    """The ACK of a push: code 200 echoing its `mid`, `sid` and, when present, `app-key`, `ua`, `dt`.

    None for a frame without headers (nothing to acknowledge).
    """
    headers = push.get("headers")
    if not isinstance(headers, Mapping):
        return None
    ack_headers: dict[str, Any] = {"mid": headers.get("mid") or new_mid(), "sid": headers.get("sid", "")}
    for key in ("app-key", "ua", "dt"):
        if key in headers:
            ack_headers[key] = headers[key]
    return {"code": 200, "headers": ack_headers}


def send_frame(
    *, chat_id: str, to_user: str, own_id: str, content: Content, uuid: str | None = None, mid: str | None = None
) -> Frame:
    """`/r/MessageSend/sendByReceiverScope`: a text or image message to the buyer in `chat_id`."""
    chat_id, to_user, own_id = (_bare(x) for x in (chat_id, to_user, own_id))
    body = [
        {
            "uuid": uuid or new_uuid(),
            "cid": f"{chat_id}{GOOFISH}",
            "conversationType": 1,
            "content": {"contentType": 101, "custom": {"type": 1, "data": encode_content(content)}},
            "redPointPolicy": 0,
            "extension": {"extJson": "{}"},
            "ctx": {"appVersion": "1.0", "platform": "web"},
            "mtags": {},
            "msgReadStatusSetting": 1,
        },
        {"actualReceivers": [f"{to_user}{GOOFISH}", f"{own_id}{GOOFISH}"]},
    ]
    return _request(LWP_SEND, body, mid=mid)


def _bare(user_or_chat: str) -> str:
    """An id without its `@goofish` suffix, so callers may pass either form."""
    return user_or_chat.removesuffix(GOOFISH)


def create_chat_frame(*, peer_id: str, own_id: str, item_id: str, mid: str | None = None) -> Frame:
    """`/r/SingleChatConversation/create`: open (or find) the conversation with a buyer about an item."""
    body = [
        {
            "pairFirst": f"{peer_id}{GOOFISH}",
            "pairSecond": f"{own_id}{GOOFISH}",
            "bizType": "1",
            "extension": {"itemId": item_id},
            "ctx": {"appVersion": "1.0", "platform": "web"},
        }
    ]
    return _request(LWP_CREATE_CHAT, body, mid=mid)


def response_frame(mid: str, *, code: int = 200, body: Any = None, headers: Mapping[str, Any] | None = None) -> Frame:
    """A server response to a request: `code` and the request's `mid` (used by the simulator)."""
    frame: Frame = {"code": code, "headers": {**(headers or {}), "mid": mid}}
    if body is not None:
        frame["body"] = body
    return frame


def push_frame(payloads: list[str], *, sid: str, mid: str | None = None, pts: int | None = None) -> Frame:
    """A sync push carrying base64 payloads, one `data[]` item each (used by the simulator)."""
    ts = now_ms()
    items = [
        {"bizType": 40, "objectType": 40000, "streamId": f"{sid}-{i}", "data": payload}
        for i, payload in enumerate(payloads)
    ]
    package = {"data": items, "maxPts": pts if pts is not None else ts * 1000, "timestamp": ts}
    headers = {"mid": mid or new_mid(), "sid": sid, "app-key": IM_APP_KEY, "dt": "j"}
    return {"lwp": LWP_PUSH, "headers": headers, "body": {"syncPushPackage": package}}


class FrameKind(enum.StrEnum):
    RESPONSE = "response"
    PUSH = "push"
    REQUEST = "request"
    ACK = "ack"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A parsed frame: its kind, the `mid` it carries, the response code, the `lwp` path, and the raw object."""

    kind: FrameKind
    mid: str | None
    code: int | None
    lwp: str | None
    frame: Frame

    @property
    def push_items(self) -> list[Any]:
        """The `data[]` items of a push (empty for anything else)."""
        body = self.frame.get("body")
        package = body.get("syncPushPackage") if isinstance(body, Mapping) else None
        items = package.get("data") if isinstance(package, Mapping) else None
        return items if isinstance(items, list) else []


def _load(raw: str | bytes) -> tuple[Frame, str | None, int | None, str | None]:
    size = len(raw)
    if isinstance(raw, str) and size > MAX_FRAME_BYTES // 4:  # a character is up to 4 bytes in UTF-8
        size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_FRAME_BYTES:
        raise MalformedFrame(f"frame of {size} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"frame is not JSON: {exc}") from exc
    if not isinstance(frame, dict):
        raise MalformedFrame(f"frame is JSON {type(frame).__name__}, not an object")
    headers = frame.get("headers")
    if headers is not None and not isinstance(headers, dict):
        raise MalformedFrame("frame `headers` is not an object")
    mid = headers.get("mid") if headers else None
    code = frame.get("code")
    lwp = frame.get("lwp")
    return (
        frame,
        mid if isinstance(mid, str) else None,
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        lwp if isinstance(lwp, str) else None,
    )


def parse_frame(raw: str | bytes, *, pending: Mapping[str, Any] | Set[str] | None = None) -> Inbound:
    """Parse and classify a frame the server sent us.

    A frame with `code` and no `lwp` is a RESPONSE, provided its `mid` is one we sent (when `pending` is given;
    a stray one is UNKNOWN); a frame with a sync package is a PUSH; any other object is UNKNOWN.
    """
    frame, mid, code, lwp = _load(raw)
    if lwp is None and code is not None:
        if pending is None or (mid is not None and mid in pending):
            return Inbound(FrameKind.RESPONSE, mid, code, None, frame)
        return Inbound(FrameKind.UNKNOWN, mid, code, None, frame)
    body = frame.get("body")
    if isinstance(body, dict) and isinstance(body.get("syncPushPackage"), dict):
        # A sync package is a push whatever its `lwp` (/s/para, /s/sync, /s/vulcan, or none): clients never read it.
        return Inbound(FrameKind.PUSH, mid, code, lwp, frame)
    return Inbound(FrameKind.UNKNOWN, mid, code, lwp, frame)


def parse_client_frame(raw: str | bytes) -> Inbound:
    """Parse and classify a frame a client sent (the server side): REQUEST with `lwp` and `mid`, ACK, or UNKNOWN."""
    frame, mid, code, lwp = _load(raw)
    if lwp is not None and mid is not None:
        return Inbound(FrameKind.REQUEST, mid, code, lwp, frame)
    if lwp is None and code is not None:
        return Inbound(FrameKind.ACK, mid, code, None, frame)
    return Inbound(FrameKind.UNKNOWN, mid, code, lwp, frame)
