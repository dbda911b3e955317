"""Push decoding (PROTOCOL.md §11-§12) against payloads built by hand, key by key."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import msgpack
import orjson
import pytest

from xianyu_autoreply.protocol import (
    BuyerMessage,
    DecodedPush,
    FrameKind,
    MalformedPush,
    OrderEvent,
    OrderStatus,
    SellerMessage,
    SystemNotice,
    Typing,
    UnknownPayload,
    decode_payload,
    decode_push,
    encode_frame,
    encode_order_card,
    encode_system_notice,
    encode_typing,
    parse_frame,
    push_frame,
)
from xianyu_autoreply.protocol.push import payloads_of

from .protocol_samples import (
    BUYER,
    CHAT,
    CREATED,
    ITEM,
    MESSAGE_ID,
    NICK,
    ORDER,
    SELLER,
    as_json,
    b64,
    chat_url,
    message_doc,
    order_card_json,
    packed,
    push_frame_of,
    refund_card_json,
    stringify_keys,
)


def decode(payload: str) -> object:
    return decode_payload(payload, own_id=SELLER)


EXPECTED_BUYER = BuyerMessage(
    message_id=MESSAGE_ID,
    chat_id=CHAT,
    sender_id=BUYER,
    sender_nick=NICK,
    item_id=ITEM,
    text="你好，这个还在吗？",
    content_type=1,
    created_ms=CREATED,
)


# --- chat messages ---------------------------------------------------------------------------------------------


def test_hand_made_msgpack_buyer_message_decodes_field_by_field() -> None:
    event = decode(packed(message_doc()))
    assert isinstance(event, BuyerMessage)
    assert event.message_id == MESSAGE_ID
    assert event.chat_id == CHAT
    assert event.sender_id == BUYER
    assert event.sender_nick == NICK
    assert event.item_id == ITEM
    assert event.text == "你好，这个还在吗？"
    assert event.content_type == 1
    assert event.created_ms == CREATED
    assert event == EXPECTED_BUYER


def test_msgpack_payload_is_really_msgpack_with_integer_keys() -> None:
    raw = base64.b64decode(packed(message_doc()))
    assert raw[0] in (0x82, 0xDE)  # a map, not JSON text (§11.2)
    assert 1 in msgpack.unpackb(raw, strict_map_key=False)


def test_the_same_message_as_json_with_string_keys_decodes_the_same() -> None:
    doc = stringify_keys(message_doc())
    assert "1" in doc and "10" in doc["1"]
    assert decode(as_json(doc)) == EXPECTED_BUYER


def test_binary_strings_are_read_as_utf8_text() -> None:
    doc = message_doc()
    info = doc[1][10]
    info["reminderContent"] = "你好".encode()
    info["reminderTitle"] = NICK.encode()
    doc[1][2] = f"{CHAT}@goofish".encode()
    event = decode(packed(doc))
    assert isinstance(event, BuyerMessage)
    assert (event.text, event.sender_nick, event.chat_id) == ("你好", NICK, CHAT)


def test_own_message_is_a_seller_message() -> None:
    event = decode(packed(message_doc("在的，今天发货", sender=SELLER, nick="我的小店")))
    assert event == SellerMessage(MESSAGE_ID, CHAT, SELLER, "我的小店", ITEM, "在的，今天发货", 1, CREATED)


def test_sender_nick_prefers_sender_nick_then_reminder_title() -> None:
    assert decode(packed(message_doc(sender_nick="昵称A", nick="标题B"))).sender_nick == "昵称A"  # type: ignore[union-attr]
    assert decode(packed(message_doc(nick="标题B"))).sender_nick == "标题B"  # type: ignore[union-attr]
    assert decode(packed(message_doc(nick=None))).sender_nick == ""  # type: ignore[union-attr]


def test_sender_falls_back_to_the_message_sender_field() -> None:
    event = decode(packed(message_doc(drop=("senderUserId",))))
    assert isinstance(event, BuyerMessage)
    assert event.sender_id == BUYER


def test_image_message_keeps_its_content_type() -> None:
    content = orjson.dumps({"contentType": 2, "image": {"pics": [{"url": "https://img.alicdn.com/x.jpg"}]}}).decode()
    event = decode(packed(message_doc("[图片]", content_type=2, content_json=content)))
    assert isinstance(event, BuyerMessage)
    assert (event.text, event.content_type) == ("[图片]", 2)


# --- message id ------------------------------------------------------------------------------------------------


def test_message_id_comes_from_biz_tag_first() -> None:
    event = decode(packed(message_doc(biz_tag='{"sourceId":"S:1","messageId":"from-biz"}')))
    assert event.message_id == "from-biz"  # type: ignore[union-attr]


def test_numeric_message_id_in_biz_tag_is_text() -> None:
    assert decode(packed(message_doc(biz_tag='{"messageId":12345}'))).message_id == "12345"  # type: ignore[union-attr]


def test_message_id_then_from_ext_json() -> None:
    doc = message_doc(biz_tag='{"sourceId":"S:1"}', ext_json='{"messageId":"from-ext","contentType":1}')
    assert decode(packed(doc)).message_id == "from-ext"  # type: ignore[union-attr]
    doc = message_doc(biz_tag="not json", ext_json='{"messageId":"from-ext"}')
    assert decode(packed(doc)).message_id == "from-ext"  # type: ignore[union-attr]


def test_message_id_then_from_the_reminder_url() -> None:
    doc = message_doc(drop=("bizTag", "extJson"), url=chat_url(message_id="from-url"))
    assert decode(packed(doc)).message_id == "from-url"  # type: ignore[union-attr]


def test_message_id_then_the_server_message_id() -> None:
    # Not in the peers (they never read 1.3), but it is the platform's own id: better than a synthetic key.
    doc = message_doc(drop=("bizTag", "extJson"), url=chat_url(message_id=None), server_id="3799.PNM")
    assert decode(packed(doc)).message_id == "3799.PNM"  # type: ignore[union-attr]


def _no_id(text: str = "同样的话", *, created: int = CREATED, chat: str = CHAT) -> str:
    doc = message_doc(
        text, created=created, chat=chat, drop=("bizTag", "extJson"), url=chat_url(message_id=None), server_id=None
    )
    return packed(doc)


def test_fallback_message_id_is_stable_and_tells_messages_apart() -> None:
    first = decode(_no_id()).message_id  # type: ignore[union-attr]
    assert first and first == decode(_no_id()).message_id  # type: ignore[union-attr]
    others = {
        decode(_no_id("另一句话")).message_id,  # type: ignore[union-attr]
        decode(_no_id(created=CREATED + 1)).message_id,  # type: ignore[union-attr]
        decode(_no_id(chat="99")).message_id,  # type: ignore[union-attr]
    }
    assert first not in others and len(others) == 3


# --- item id ---------------------------------------------------------------------------------------------------


def test_item_id_comes_from_the_reminder_url() -> None:
    assert decode(packed(message_doc(url=chat_url(item_id="777000111222")))).item_id == "777000111222"  # type: ignore[union-attr]


def test_item_id_is_none_without_one_in_the_url() -> None:
    assert decode(packed(message_doc(url=chat_url(item_id=None)))).item_id is None  # type: ignore[union-attr]
    assert decode(packed(message_doc(drop=("reminderUrl",)))).item_id is None  # type: ignore[union-attr]


# --- orders ----------------------------------------------------------------------------------------------------

# §12.4 (and the §12.2 triggers), typed out from PROTOCOL.md rather than imported from notices.py.
STATUS_TEXTS = [
    ("[买家确认收货，交易成功]", OrderStatus.COMPLETED),
    ("[你已确认收货，交易成功]", OrderStatus.COMPLETED),
    ("[你已发货]", OrderStatus.SHIPPED),
    ("你已发货", OrderStatus.SHIPPED),
    ("[你已发货，请等待买家确认收货]", OrderStatus.SHIPPED),
    ("[我已付款，等待你发货]", OrderStatus.PAID),
    ("[买家已付款]", OrderStatus.PAID),
    ("[付款完成]", OrderStatus.PAID),
    ("[已付款，待发货]", OrderStatus.PAID),
    ("我已付款，等待你发货", OrderStatus.PAID),
    ("[记得及时发货]", OrderStatus.PAID),
    ("[我已拍下，待付款]", OrderStatus.CREATED),
    ("[退款成功，钱款已原路退返]", OrderStatus.REFUNDED),
    ("[你关闭了订单，钱款已原路退返]", OrderStatus.CLOSED),
]


def _card(text: str, card_json: str, **kwargs: object) -> str:
    return packed(message_doc(text, content_type=26, content_json=card_json, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "status"), STATUS_TEXTS)
def test_order_card_for_each_status_text(text: str, status: OrderStatus) -> None:
    event = decode(_card(text, order_card_json(text.strip("[]"))))
    assert event == OrderEvent(ORDER, status, CHAT, BUYER, ITEM, text, MESSAGE_ID, CREATED)


def test_order_card_sent_from_the_seller_side_has_no_buyer() -> None:
    event = decode(_card("[你已发货]", order_card_json("你已发货"), sender=SELLER))
    assert isinstance(event, OrderEvent)
    assert event.buyer_id is None


def test_order_status_text_without_a_card_is_still_an_order_event() -> None:
    event = decode(packed(message_doc("  [我已付款，等待你发货]  ")))
    assert isinstance(event, OrderEvent)
    assert (event.status, event.order_id) == (OrderStatus.PAID, None)


@pytest.mark.parametrize(
    ("button_url", "main_url"),
    [
        (f"fleamarket://order_detail?id={ORDER}&role=seller", ""),
        (f"https://h5.m.goofish.com/app/idleFish-F2e/order?orderId={ORDER}&role=seller", ""),
        (f"https://h5.m.goofish.com/deliver?bizOrderId={ORDER}", ""),
        ("", f"fleamarket://order_detail?id={ORDER}&role=seller"),
    ],
    ids=["button-order-detail", "button-orderId", "button-bizOrderId", "main-target"],
)
def test_order_id_comes_from_the_card_target_urls(button_url: str, main_url: str) -> None:
    card = order_card_json("我已付款，等待你发货", button_url=button_url, main_url=main_url)
    event = decode(_card("[我已付款，等待你发货]", card))
    assert isinstance(event, OrderEvent)
    assert event.order_id == ORDER


def test_order_card_without_an_order_id() -> None:
    event = decode(_card("[你已发货]", order_card_json("你已发货", order_id=None)))
    assert isinstance(event, OrderEvent)
    assert event.order_id is None


@pytest.mark.parametrize(
    ("button", "status"), [("已同意", OrderStatus.REFUNDING), ("已撤销", OrderStatus.REFUND_CANCELLED)]
)
def test_refund_card(button: str, status: OrderStatus) -> None:
    event = decode(_card("[退款消息]", refund_card_json(button)))
    assert event == OrderEvent(ORDER, status, CHAT, BUYER, ITEM, "[退款消息]", MESSAGE_ID, CREATED)


@pytest.mark.parametrize(
    ("reminder", "status"),
    [("等待买家付款", OrderStatus.CREATED), ("等待卖家发货", OrderStatus.PAID), ("交易关闭", OrderStatus.CLOSED)],
)
def test_red_reminder_status_notice_with_a_string_message(reminder: str, status: OrderStatus) -> None:
    doc = {1: f"{BUYER}@goofish", 3: {"redReminder": reminder, "redReminderStyle": "1"}}
    assert decode(packed(doc)) == OrderEvent(None, status, None, BUYER, None, reminder, None, None)
    with_user = {1: "0@goofish", 3: {"redReminder": reminder, "userId": BUYER}}
    assert decode(packed(with_user)).buyer_id == BUYER  # type: ignore[union-attr]


def test_unknown_red_reminder_notice_is_a_system_notice() -> None:
    event = decode(packed({1: f"{BUYER}@goofish", 3: {"redReminder": "等待买家收货"}}))
    assert event == SystemNotice("等待买家收货", None, None, None)


def test_status_notice_with_an_integer_key_in_its_extra_map() -> None:
    event = decode(packed({1: f"{BUYER}@goofish", 3: {"redReminder": "等待卖家发货", 7: 1}}))
    assert isinstance(event, OrderEvent)


def test_buyer_text_under_a_paid_order_banner_is_still_a_buyer_message() -> None:
    event = decode(packed(message_doc("什么时候发货？", red_reminder="等待卖家发货")))
    assert isinstance(event, BuyerMessage)


# --- notices ---------------------------------------------------------------------------------------------------


def test_typing_notice() -> None:
    assert decode(packed({1: [{1: f"{BUYER}@goofish", 2: f"{CHAT}@goofish"}]})) == Typing(BUYER, CHAT)
    assert decode(packed({1: [{1: f"{BUYER}@goofish"}]})) == Typing(BUYER, None)


@pytest.mark.parametrize("doc", [{1: []}, {1: [{2: "x"}]}, {1: ["x"]}])
def test_typing_notice_without_a_user_is_unknown(doc: dict[int, object]) -> None:
    assert isinstance(decode(packed(doc)), UnknownPayload)


def test_chat_type_json_notice_is_a_system_notice() -> None:
    scripts = [{"chatScrip": "宝贝还在吗？"}, {"chatScrip": "可以便宜点吗？"}]
    doc = {
        "chatType": 1,
        "operation": {"content": {"contentType": 8, "sessionArouse": {"arouseChatScriptInfo": scripts}}},
    }
    event = decode(b64(orjson.dumps(doc)))
    assert isinstance(event, SystemNotice)
    assert "宝贝还在吗？" in event.text and "可以便宜点吗？" in event.text
    assert isinstance(decode(b64(b'{"chatType": 2, "operation": {"content": {"contentType": 3}}}')), SystemNotice)
    assert isinstance(decode(b64(b'{"chatType": 2}')), SystemNotice)


# §12.1: the pure system texts (the bracketed order texts of §12.1 are order events, tested above).
SYSTEM_TEXTS = [
    "[不想宝贝被砍价?设置不砍价回复  ]",
    "AI正在帮你回复消息，不错过每笔订单",
    "发来一条消息",
    "发来一条新消息",
    "快给ta一个评价吧~",
    "快给ta一个评价吧～",
    "卖家人不错？送Ta闲鱼小红花",
]


@pytest.mark.parametrize("text", SYSTEM_TEXTS)
def test_system_texts_are_system_notices(text: str) -> None:
    event = decode(packed(message_doc(text)))
    assert event == SystemNotice(text, CHAT, MESSAGE_ID, CREATED)


def test_need_push_false_is_a_system_notice() -> None:
    event = decode(packed(message_doc("您有一条新的交易消息", need_push="false")))
    assert event == SystemNotice("您有一条新的交易消息", CHAT, MESSAGE_ID, CREATED)


@pytest.mark.parametrize("text", ["[卡片消息]", "我已小刀，待刀成"])
def test_bargain_card_is_a_system_notice(text: str) -> None:
    event = decode(_card(text, order_card_json("我已小刀，待刀成")))
    assert event == SystemNotice(text, CHAT, MESSAGE_ID, CREATED)


def test_payload_without_a_message_is_unknown() -> None:
    assert isinstance(decode(packed({2: "x", 3: {"needPush": "true"}})), UnknownPayload)
    assert isinstance(decode(packed({1: 5})), UnknownPayload)
    assert isinstance(decode(packed(message_doc(drop=("reminderContent",)))), UnknownPayload)


def test_broken_json_in_biz_tag_falls_through_to_ext_json() -> None:
    doc = message_doc(biz_tag='{"messageId": broken', ext_json='{"messageId":"from-ext"}')
    assert decode(packed(doc)).message_id == "from-ext"  # type: ignore[union-attr]


@pytest.mark.parametrize("card_json", ["not json", "{broken", "[1, 2]", '{"dxCard": {"item": {}}}', ""])
def test_a_card_that_is_no_order_and_no_bargain_is_a_buyer_message(card_json: str) -> None:
    event = decode(packed(message_doc("看看这个宝贝", content_type=26, content_json=card_json)))
    assert isinstance(event, BuyerMessage)
    assert event.content_type == 26


def test_encoded_typing_and_system_notice_decode_back() -> None:
    assert decode(encode_typing(user_id=BUYER, chat_id=CHAT)) == Typing(BUYER, CHAT)
    notice = decode(encode_system_notice("宝贝还在吗？"))
    assert notice == SystemNotice("宝贝还在吗？", None, None, None)
    assert base64.b64decode(encode_system_notice("x")).startswith(b"{")  # the plain-JSON variant


def test_payloads_of_a_push_frame() -> None:
    frame = push_frame_of(["AAA=", "BBB="])
    frame["body"]["syncPushPackage"]["data"].append({"data": 5})
    assert payloads_of(frame) == ["AAA=", "BBB="]
    assert payloads_of({}) == []


# --- malformed payloads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(packed([1, 2]), id="msgpack-list"),
        pytest.param(packed(5), id="msgpack-int"),
        pytest.param(packed("text"), id="msgpack-str"),
        pytest.param(packed(None), id="msgpack-nil"),
        pytest.param(b64(b"[1, 2]"), id="json-list"),
        pytest.param(b64(b'"text"'), id="json-string"),
        pytest.param(b64(b"{not json"), id="broken-json"),
        pytest.param(b64(b"\x81\x01\xa2\xff\xfe"), id="invalid-utf8-str"),
        pytest.param(b64(b"\x91\xc1"), id="reserved-byte"),
        pytest.param(b64(msgpack.packb({1: 1}) + b"\x00"), id="trailing-bytes"),
    ],
)
def test_undecodable_documents_raise_malformed_push(payload: str) -> None:
    with pytest.raises(MalformedPush):
        decode(payload)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 8, 16, 3_000])
def test_ext_typed_msgpack_is_rejected(length: int) -> None:
    doc = message_doc()
    doc[1][5] = msgpack.ExtType(5, b"x" * length)  # fixext 1/2/4/8/16 and ext 8/16
    with pytest.raises(MalformedPush, match="ext"):
        decode(packed(doc))


def test_timestamp_ext_is_rejected_too() -> None:
    doc = message_doc()
    doc[1][5] = msgpack.Timestamp(1_742_458_817, 0)
    with pytest.raises(MalformedPush):
        decode(packed(doc))


def test_every_truncation_of_a_valid_payload_raises_malformed_push() -> None:
    raw = base64.b64decode(packed(message_doc()))
    for end in range(1, len(raw)):
        with pytest.raises(MalformedPush):
            decode(b64(raw[:end]))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("", id="empty"),
        pytest.param("A", id="one-char"),
        pytest.param("!!!!", id="punctuation"),
        pytest.param("gqFh-_8=", id="urlsafe"),
        pytest.param("gqFh oWI=", id="inner-space"),
        pytest.param("你好你好", id="non-ascii"),
        pytest.param("====", id="only-padding"),
    ],
)
def test_bad_base64_raises_malformed_push(payload: str) -> None:
    with pytest.raises(MalformedPush):
        decode(payload)


def test_missing_base64_padding_is_tolerated() -> None:
    payload = packed(message_doc("abcd"))
    assert decode(payload.rstrip("=")) == decode(payload)


def test_huge_payloads_raise_malformed_push() -> None:
    with pytest.raises(MalformedPush, match="exceeds"):
        decode("A" * (2 << 20))
    with pytest.raises(MalformedPush):
        decode(packed(message_doc("长" * 400_000)))


def test_malformed_push_keeps_its_cause() -> None:
    with pytest.raises(MalformedPush) as caught:
        decode("A")
    assert caught.value.__cause__ is not None


def test_no_order_card_for_statuses_without_a_text() -> None:
    for status in (OrderStatus.REFUNDING, OrderStatus.REFUND_CANCELLED):
        with pytest.raises(ValueError):
            encode_order_card(
                order_id=ORDER, status=status, buyer_id=BUYER, buyer_nick=NICK, seller_id=SELLER, chat_id=CHAT,
                item_id=ITEM, message_id=MESSAGE_ID, created_ms=CREATED,
            )  # fmt: skip


_ENCODE_ONCE = (
    "from xianyu_autoreply.protocol import BuyerMessage\n"
    "from xianyu_autoreply.protocol.push import encode_chat_message\n"
    "print(encode_chat_message(BuyerMessage('m1','1','2','n','3','t',1,5), receiver_id='9'))\n"
)


def test_encoding_is_the_same_in_every_process() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _ENCODE_ONCE],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


# --- whole push frames: every data[] item ----------------------------------------------------------------------


def _good(i: int) -> str:
    return packed(message_doc(f"第{i}条消息", biz_tag=f'{{"messageId":"m{i}"}}'))


def test_every_item_of_a_push_is_decoded() -> None:
    payloads = [
        _good(0),
        _card("[我已付款，等待你发货]", order_card_json("我已付款，等待你发货")),
        packed({1: [{1: f"{BUYER}@goofish", 2: f"{CHAT}@goofish"}]}),
    ]
    result = decode_push(push_frame_of(payloads), own_id=SELLER)
    assert isinstance(result, DecodedPush)
    assert [type(e) for e in result.events] == [BuyerMessage, OrderEvent, Typing]
    assert result.errors == ()


def test_a_bad_item_does_not_hide_its_neighbours() -> None:
    result = decode_push(push_frame_of([_good(1), "not base64!", _good(2)]), own_id=SELLER)
    assert [e.message_id for e in result.events] == ["m1", "m2"]  # type: ignore[union-attr]
    assert len(result.errors) == 1
    assert isinstance(result.errors[0], MalformedPush)


def test_a_push_without_items() -> None:
    assert decode_push(push_frame_of([]), own_id=SELLER) == DecodedPush((), ())


def test_fifty_items_give_fifty_events_in_order() -> None:
    result = decode_push(push_frame_of([_good(i) for i in range(50)]), own_id=SELLER)
    assert [e.message_id for e in result.events] == [f"m{i}" for i in range(50)]  # type: ignore[union-attr]
    assert result.errors == ()


@pytest.mark.parametrize(
    "frame",
    [{}, {"body": None}, {"body": {"syncPushPackage": None}}, {"body": {"syncPushPackage": {"data": "x"}}}],
)
def test_a_frame_without_a_data_list_gives_one_error(frame: dict[str, object]) -> None:
    result = decode_push(frame, own_id=SELLER)
    assert result.events == () and len(result.errors) == 1


def test_items_without_a_payload_string_are_errors_naming_their_index() -> None:
    frame = push_frame_of([_good(0)])
    frame["body"]["syncPushPackage"]["data"] += [None, {"data": 5}, {"bizType": 40}, "x"]
    result = decode_push(frame, own_id=SELLER)
    assert len(result.events) == 1
    assert [str(e).split(" ")[0] for e in result.errors] == ["data[1]", "data[2]", "data[3]", "data[4]"]


def test_a_huge_item_is_an_error_not_an_exception() -> None:
    result = decode_push(push_frame_of([_good(0), "A" * (2 << 20)]), own_id=SELLER)
    assert len(result.events) == 1 and len(result.errors) == 1


def test_simulator_push_frame_round_trips_through_parse_and_decode() -> None:
    frame = push_frame([_good(0), _good(1)], sid="sid-7")
    inbound = parse_frame(encode_frame(frame))
    assert inbound.kind is FrameKind.PUSH
    result = decode_push(inbound.frame, own_id=SELLER)
    assert [e.text for e in result.events] == ["第0条消息", "第1条消息"]  # type: ignore[union-attr]
