"""LWP frames and send content (PROTOCOL.md §6-§10, §13)."""

from __future__ import annotations

import base64
import json
import re

import orjson
import pytest

from xianyu_autoreply.protocol import (
    FrameKind,
    ImageContent,
    MalformedFrame,
    TextContent,
    ack_diff_frame,
    ack_frame,
    create_chat_frame,
    decode_content,
    encode_content,
    encode_frame,
    heartbeat_frame,
    parse_client_frame,
    parse_frame,
    push_frame,
    reg_frame,
    response_frame,
    send_frame,
)

APP_KEY = "444e9908a51d1cb236a27862abc769c9"
MID = "4211742458817389 0"
DID = "01234567-89AB-4CDE-8F01-23456789ABCD-2200000000001"
REG_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/133.0.0.0 Safari/537.36 "
    "DingTalk(2.1.5) OS(Windows/10) Browser(Chrome/133.0.0.0) DingWeb/2.1.5 IMPaaS DingWeb/2.1.5"
)
NIHAO_B64 = "eyJjb250ZW50VHlwZSI6IDEsICJ0ZXh0IjogeyJ0ZXh0IjogIlx1NGY2MFx1NTk3ZCJ9fQ=="
MID_RE = re.compile(r"^(0|[1-9]\d{0,2})\d{13} 0$")


def test_reg_frame_is_exactly_the_protocol_frame_in_key_order() -> None:
    frame = reg_frame(token="at-1", device_id=DID, mid=MID)
    expected_headers = [
        ("cache-header", "app-key token ua wv"),
        ("app-key", APP_KEY),
        ("token", "at-1"),
        ("ua", REG_UA),
        ("dt", "j"),
        ("wv", "im:3,au:3,sy:6"),
        ("sync", "0,0;0;0;"),
        ("did", DID),
        ("mid", MID),
    ]
    assert list(frame) == ["lwp", "headers"]  # no body on /reg
    assert frame["lwp"] == "/reg"
    assert list(frame["headers"].items()) == expected_headers


def test_reg_frame_makes_its_own_mid() -> None:
    assert MID_RE.match(reg_frame(token="t", device_id=DID)["headers"]["mid"])


def test_encode_frame_keeps_key_order_and_round_trips() -> None:
    frame = reg_frame(token="at-1", device_id=DID, mid=MID)
    text = encode_frame(frame)
    assert json.loads(text) == frame
    assert list(json.loads(text)["headers"]) == list(frame["headers"])


def test_ack_diff_frame_declares_us_synced_up_to_now() -> None:
    frame = ack_diff_frame(at_ms=1_742_458_817_389, mid=MID)
    assert frame == {
        "lwp": "/r/SyncStatus/ackDiff",
        "headers": {"mid": MID},
        "body": [
            {
                "pipeline": "sync",
                "tooLong2Tag": "PNM,1",
                "channel": "sync",
                "topic": "sync",
                "highPts": 0,
                "pts": 1_742_458_817_389_000,
                "seq": 0,
                "timestamp": 1_742_458_817_389,
            }
        ],
    }
    assert list(frame["body"][0]) == [
        "pipeline",
        "tooLong2Tag",
        "channel",
        "topic",
        "highPts",
        "pts",
        "seq",
        "timestamp",
    ]


def test_ack_diff_frame_defaults_to_now() -> None:
    import time

    before = time.time_ns() // 1_000_000
    body = ack_diff_frame()["body"][0]
    assert before <= body["timestamp"] <= before + 5_000
    assert body["pts"] == body["timestamp"] * 1000


def test_heartbeat_frame() -> None:
    assert heartbeat_frame(mid=MID) == {"lwp": "/!", "headers": {"mid": MID}}
    assert MID_RE.match(heartbeat_frame()["headers"]["mid"])


def test_ack_copies_mid_sid_app_key_ua_dt_in_order() -> None:
    push = {
        "lwp": "/s/para",
        "headers": {"dt": "j", "ua": "UA", "x-other": "no", "app-key": APP_KEY, "sid": "sid-9", "mid": MID},
        "body": {},
    }
    ack = ack_frame(push)
    assert ack == {"code": 200, "headers": {"mid": MID, "sid": "sid-9", "app-key": APP_KEY, "ua": "UA", "dt": "j"}}
    assert list(ack) == ["code", "headers"]
    assert list(ack["headers"]) == ["mid", "sid", "app-key", "ua", "dt"]


def test_ack_copies_optional_headers_only_when_present() -> None:
    assert ack_frame({"headers": {"mid": MID}}) == {"code": 200, "headers": {"mid": MID, "sid": ""}}


def test_ack_of_a_frame_without_mid_makes_a_fresh_one() -> None:
    ack = ack_frame({"headers": {"sid": "s"}})
    assert ack is not None
    assert MID_RE.match(ack["headers"]["mid"])
    assert ack["headers"]["sid"] == "s"


@pytest.mark.parametrize("frame", [{"lwp": "/s/para", "body": {}}, {"headers": None}, {"headers": "mid"}, {}])
def test_no_ack_without_headers(frame: dict[str, object]) -> None:
    assert ack_frame(frame) is None


def test_send_frame_is_the_protocol_frame_with_the_nihao_vector() -> None:
    frame = send_frame(
        chat_id="48761234567", to_user="2200000000777", own_id="2200000000001", content=TextContent("你好"),
        uuid="-17424588173891", mid=MID,
    )  # fmt: skip
    assert frame == {
        "lwp": "/r/MessageSend/sendByReceiverScope",
        "headers": {"mid": MID},
        "body": [
            {
                "uuid": "-17424588173891",
                "cid": "48761234567@goofish",
                "conversationType": 1,
                "content": {"contentType": 101, "custom": {"type": 1, "data": NIHAO_B64}},
                "redPointPolicy": 0,
                "extension": {"extJson": "{}"},
                "ctx": {"appVersion": "1.0", "platform": "web"},
                "mtags": {},
                "msgReadStatusSetting": 1,
            },
            {"actualReceivers": ["2200000000777@goofish", "2200000000001@goofish"]},
        ],
    }
    assert list(frame) == ["lwp", "headers", "body"]
    assert list(frame["body"][0]) == [
        "uuid", "cid", "conversationType", "content", "redPointPolicy", "extension", "ctx", "mtags",
        "msgReadStatusSetting",
    ]  # fmt: skip


def test_send_frame_makes_its_own_uuid_and_mid() -> None:
    frame = send_frame(chat_id="1", to_user="2", own_id="3", content=TextContent("x"))
    assert re.fullmatch(r"-\d{13}1", frame["body"][0]["uuid"])
    assert MID_RE.match(frame["headers"]["mid"])


def test_text_content_encoding_matches_the_protocol_vector() -> None:
    assert encode_content(TextContent("你好")) == NIHAO_B64
    assert base64.b64decode(NIHAO_B64) == b'{"contentType": 1, "text": {"text": "\\u4f60\\u597d"}}'


def test_image_content_is_the_protocol_json_without_ascii_escapes() -> None:
    data = encode_content(ImageContent("https://img.alicdn.com/图.jpg"))
    assert base64.b64decode(data).decode() == (
        '{"contentType": 2, "image": {"pics": [{"height": 600, "type": 0, '
        '"url": "https://img.alicdn.com/图.jpg", "width": 800}]}}'
    )


def test_send_frame_with_an_image() -> None:
    frame = send_frame(chat_id="1", to_user="2", own_id="3", content=ImageContent("https://x/y.png", 10, 20))
    assert decode_content(frame["body"][0]["content"]["custom"]["data"]) == ImageContent("https://x/y.png", 10, 20)


@pytest.mark.parametrize(
    "content", [TextContent("你好"), TextContent(""), TextContent('"\\\n\u2028😀'), ImageContent("u", 1, 2)]
)
def test_content_round_trips(content: TextContent | ImageContent) -> None:
    assert decode_content(encode_content(content)) == content


def _b64(doc: object) -> str:
    return base64.b64encode(doc if isinstance(doc, bytes) else json.dumps(doc).encode()).decode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param("not base64!", id="not-base64"),
        pytest.param(base64.b64encode(b"\xff\xfe").decode(), id="not-utf8"),
        pytest.param(_b64(b"not json"), id="not-json"),
        pytest.param(_b64([1]), id="list"),
        pytest.param(_b64({"contentType": 1}), id="text-missing"),
        pytest.param(_b64({"contentType": 1, "text": "hi"}), id="text-not-object"),
        pytest.param(_b64({"contentType": 1, "text": {"text": 5}}), id="text-not-string"),
        pytest.param(_b64({"contentType": 2, "image": {"pics": []}}), id="no-pics"),
        pytest.param(_b64({"contentType": 2, "image": {"pics": ["u"]}}), id="pic-not-object"),
        pytest.param(_b64({"contentType": 2, "image": {"pics": [{"url": "u", "width": "w"}]}}), id="bad-width"),
        pytest.param(_b64({"contentType": 26}), id="unsupported-type"),
    ],
)
def test_malformed_send_content_raises_malformed_frame(data: str) -> None:
    with pytest.raises(MalformedFrame):
        decode_content(data)


def test_deeply_nested_send_content_raises_malformed_frame() -> None:
    with pytest.raises(MalformedFrame):
        decode_content(_b64(b"[" * 100_000 + b"]" * 100_000))


def test_infinite_image_size_raises_malformed_frame() -> None:
    with pytest.raises(MalformedFrame):
        decode_content(_b64(b'{"contentType":2,"image":{"pics":[{"url":"u","width":1e400}]}}'))


def test_create_chat_frame() -> None:
    frame = create_chat_frame(peer_id="2200000000777", own_id="2200000000001", item_id="891198795482", mid=MID)
    assert frame == {
        "lwp": "/r/SingleChatConversation/create",
        "headers": {"mid": MID},
        "body": [
            {
                "pairFirst": "2200000000777@goofish",
                "pairSecond": "2200000000001@goofish",
                "bizType": "1",
                "extension": {"itemId": "891198795482"},
                "ctx": {"appVersion": "1.0", "platform": "web"},
            }
        ],
    }


def test_response_frame_echoes_the_mid() -> None:
    assert response_frame(MID) == {"code": 200, "headers": {"mid": MID}}
    body = {"singleChatConversation": {"cid": "1@goofish"}}
    assert response_frame(MID, code=500, body=body, headers={"sid": "s"}) == {
        "code": 500, "headers": {"sid": "s", "mid": MID}, "body": body,
    }  # fmt: skip


def test_push_frame_carries_one_item_per_payload() -> None:
    frame = push_frame(["AAA=", "BBB="], sid="sid-1", mid=MID, pts=7)
    assert frame["lwp"] == "/s/para"
    assert frame["headers"] == {"mid": MID, "sid": "sid-1", "app-key": APP_KEY, "dt": "j"}
    package = frame["body"]["syncPushPackage"]
    assert [i["data"] for i in package["data"]] == ["AAA=", "BBB="]
    assert all(i["bizType"] == 40 and i["objectType"] == 40000 for i in package["data"])
    assert package["maxPts"] == 7
    inbound = parse_frame(encode_frame(frame))
    assert inbound.kind is FrameKind.PUSH
    assert inbound.push_items == package["data"]


# --- classification of what arrives ----------------------------------------------------------------------------


def test_response_to_one_of_our_requests_is_matched_by_mid() -> None:
    raw = encode_frame({"code": 200, "headers": {"mid": MID, "sid": "s"}, "body": {}})
    for pending in ({MID}, {MID: object()}, frozenset({MID, "other 0"})):
        inbound = parse_frame(raw, pending=pending)
        assert (inbound.kind, inbound.mid, inbound.code, inbound.lwp) == (FrameKind.RESPONSE, MID, 200, None)
    assert parse_frame(raw).kind is FrameKind.RESPONSE  # nothing to match against


def test_stray_response_is_unknown() -> None:
    raw = encode_frame({"code": 200, "headers": {"mid": MID}})
    assert parse_frame(raw, pending={"other 0"}).kind is FrameKind.UNKNOWN
    assert parse_frame(raw, pending=set()).kind is FrameKind.UNKNOWN
    assert parse_frame(b'{"code": 200}', pending={MID}).kind is FrameKind.UNKNOWN  # no mid at all


def test_error_response_keeps_its_code() -> None:
    inbound = parse_frame(b'{"code": 401, "headers": {"mid": "m 0"}}', pending={"m 0"})
    assert (inbound.kind, inbound.code) == (FrameKind.RESPONSE, 401)


def test_push_is_recognised_by_its_sync_package() -> None:
    frame = {
        "lwp": "/s/sync",
        "headers": {"mid": MID, "sid": "s"},
        "body": {"syncPushPackage": {"data": [{"data": "x"}]}},
    }
    inbound = parse_frame(orjson.dumps(frame))
    assert (inbound.kind, inbound.mid, inbound.lwp) == (FrameKind.PUSH, MID, "/s/sync")
    assert inbound.frame == frame
    assert inbound.push_items == [{"data": "x"}]


@pytest.mark.parametrize(
    "frame",
    [
        {},
        {"lwp": "/s/vulcan", "headers": {"mid": MID}, "body": {"other": 1}},
        {"lwp": "/s/para", "body": {"syncPushPackage": []}},
        {"lwp": "/s/para", "body": []},
        {"code": True, "headers": {"mid": MID}},
        {"code": "200", "headers": {"mid": MID}},
        {"headers": {"mid": MID}},
    ],
)
def test_anything_else_is_unknown(frame: dict[str, object]) -> None:
    inbound = parse_frame(orjson.dumps(frame), pending={MID})
    assert inbound.kind is FrameKind.UNKNOWN
    assert inbound.push_items == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param("not json", id="text"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param('{"a":"\ud800"}', id="lone-surrogate"),
        pytest.param(b"[1, 2]", id="list"),
        pytest.param(b'"frame"', id="string"),
        pytest.param(b"200", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b'{"headers": [1]}', id="headers-not-object"),
        pytest.param(b'{"lwp": "/s/para", "headers": "x"}', id="headers-string"),
        pytest.param(b'{"a": "' + b"x" * (1 << 20) + b'"}', id="oversized"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep"),
    ],
)
def test_malformed_frames_raise_malformed_frame(raw: str | bytes) -> None:
    with pytest.raises(MalformedFrame):
        parse_frame(raw)
    with pytest.raises(MalformedFrame):
        parse_client_frame(raw)


def test_oversized_text_frame_counts_bytes_not_characters() -> None:
    raw = '{"a":"' + "中" * ((1 << 20) - 16) + '"}'
    assert len(raw) < 1 << 20 < len(raw.encode())
    with pytest.raises(MalformedFrame):
        parse_frame(raw)


@pytest.mark.parametrize(
    "frame",
    [
        reg_frame(token="t", device_id=DID),
        ack_diff_frame(),
        heartbeat_frame(),
        send_frame(chat_id="1", to_user="2", own_id="3", content=TextContent("hi")),
        create_chat_frame(peer_id="2", own_id="3", item_id="4"),
    ],
    ids=["reg", "ackDiff", "heartbeat", "send", "create"],
)
def test_server_side_sees_every_client_request_as_a_request(frame: dict[str, object]) -> None:
    inbound = parse_client_frame(encode_frame(frame))
    assert inbound.kind is FrameKind.REQUEST
    assert inbound.lwp == frame["lwp"]
    assert inbound.mid == frame["headers"]["mid"]  # type: ignore[index]
    assert inbound.frame == frame


def test_server_side_sees_an_ack() -> None:
    ack = ack_frame({"headers": {"mid": MID, "sid": "s"}})
    assert ack is not None
    inbound = parse_client_frame(encode_frame(ack))
    assert (inbound.kind, inbound.mid, inbound.code) == (FrameKind.ACK, MID, 200)


@pytest.mark.parametrize("frame", [{}, {"lwp": "/!"}, {"lwp": "/!", "headers": {"mid": 5}}, {"body": []}])
def test_server_side_unknown_frames(frame: dict[str, object]) -> None:
    assert parse_client_frame(orjson.dumps(frame)).kind is FrameKind.UNKNOWN
