"""Property tests of the codec: round trips, and garbage never raising anything but our own errors.

What the round trip allows for chat text: any Unicode string a buyer or seller can type, including the empty
string, emoji, control characters and other scripts — except lone surrogates (not encodable as UTF-8, so not on
the wire at all) and, by design, the platform's own texts (an order status text such as `[你已发货]` or a system
text such as `发来一条消息`, also with white space around it), which decode as `OrderEvent`/`SystemNotice`.
Ids are digit strings; a message id is any non-empty text; the item id is optional.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xianyu_autoreply.protocol import (
    BuyerMessage,
    ChatMessage,
    DecodedPush,
    Event,
    Inbound,
    MalformedFrame,
    MalformedPush,
    OrderEvent,
    OrderStatus,
    SellerMessage,
    SystemNotice,
    TextContent,
    Typing,
    UnknownPayload,
    ack_frame,
    decode_content,
    decode_payload,
    decode_push,
    encode_chat_message,
    encode_content,
    encode_order_card,
    parse_client_frame,
    parse_frame,
)
from xianyu_autoreply.protocol.notices import ORDER_STATUS_BY_TEXT, SYSTEM_TEXTS, TEXT_BY_ORDER_STATUS

SELLER = "2200000000001"
EVENT_TYPES = (BuyerMessage, SellerMessage, OrderEvent, SystemNotice, Typing, UnknownPayload)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

digits = st.text("0123456789", min_size=1, max_size=20)
cjk = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=40)
any_text = st.one_of(st.text(max_size=200), cjk, st.sampled_from(["", " ", "[微笑]", "😀", "a\x00b", "\u2028"]))


def _is_platform_text(text: str) -> bool:
    return text.strip() in ORDER_STATUS_BY_TEXT or text.strip() in SYSTEM_TEXTS


chat_text = any_text.filter(lambda t: not _is_platform_text(t))


@st.composite
def chat_messages(draw: st.DrawFn, *, own: bool) -> ChatMessage:
    sender = SELLER if own else draw(digits.filter(lambda d: d != SELLER))
    cls = SellerMessage if own else BuyerMessage
    return cls(
        message_id=draw(
            st.one_of(st.text(min_size=1, max_size=40), st.text("0123456789abcdef", min_size=32, max_size=32))
        ),
        chat_id=draw(digits),
        sender_id=sender,
        sender_nick=draw(any_text),
        item_id=draw(st.one_of(st.none(), digits)),
        text=draw(chat_text),
        content_type=draw(st.sampled_from([1, 2])),
        created_ms=draw(st.integers(min_value=0, max_value=2**53)),
    )


@FAST
@given(chat_messages(own=False))
def test_buyer_message_round_trips(message: BuyerMessage) -> None:
    assert decode_payload(encode_chat_message(message, receiver_id=SELLER), own_id=SELLER) == message


@FAST
@given(chat_messages(own=True))
def test_seller_message_round_trips(message: SellerMessage) -> None:
    assert decode_payload(encode_chat_message(message, receiver_id="2200000000777"), own_id=SELLER) == message


@pytest.mark.parametrize("status", sorted(TEXT_BY_ORDER_STATUS))
@QUICK
@given(
    order_id=st.text("0123456789", min_size=10, max_size=19),
    buyer=digits.filter(lambda d: d != SELLER),
    nick=any_text,
    chat=digits,
    item=digits,
    message_id=st.text(min_size=1, max_size=40),
    created=st.integers(min_value=0, max_value=2**53),
)
def test_order_card_round_trips_for_every_status_with_a_text(
    status: OrderStatus, order_id: str, buyer: str, nick: str, chat: str, item: str, message_id: str, created: int
) -> None:
    payload = encode_order_card(
        order_id=order_id, status=status, buyer_id=buyer, buyer_nick=nick, seller_id=SELLER, chat_id=chat,
        item_id=item, message_id=message_id, created_ms=created,
    )  # fmt: skip
    event = decode_payload(payload, own_id=SELLER)
    assert event == OrderEvent(order_id, status, chat, buyer, item, TEXT_BY_ORDER_STATUS[status], message_id, created)


@FAST
@given(chat_text)
def test_text_content_round_trips(text: str) -> None:
    assert decode_content(encode_content(TextContent(text))) == TextContent(text)


# --- garbage ---------------------------------------------------------------------------------------------------


def _decodes_or_malformed(payload: str) -> Event | None:
    try:
        event = decode_payload(payload, own_id=SELLER)
    except MalformedPush:
        return None
    assert isinstance(event, EVENT_TYPES)
    return event


@FAST
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_malformed_push(raw: bytes) -> None:
    _decodes_or_malformed(base64.b64encode(raw).decode())


@FAST
@given(st.text(max_size=200))
def test_random_text_as_a_payload_only_raises_malformed_push(text: str) -> None:
    _decodes_or_malformed(text)


_keys = st.one_of(st.integers(-5, 20), st.sampled_from(["1", "2", "3", "5", "6", "10", "chatType", "redReminder"]))
_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    any_text,
    st.sampled_from(
        ["1@goofish", "等待卖家发货", "[你已发货]", "false", '{"messageId":"x"}', "fleamarket://x?itemId=1"]
    ),
)
_msgpack_leaves = st.one_of(
    _json_leaves,
    st.floats(),
    st.binary(max_size=20),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=20)),
)


def _tree(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_keys, children, max_size=5)),
        max_leaves=12,
    )


def _dumps(doc: Any) -> str:
    return orjson.dumps(doc, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()


def _message_shaped(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Maps shaped like §11.3 with random values where the decoder looks, to reach its deeper branches."""
    value = _tree(leaves)
    card = st.one_of(
        value.map(lambda v: _dumps({"dxCard": {"item": {"main": {"exContent": v}}}})),
        value.map(lambda v: _dumps({"dynamicOperation": {"changeContent": v}})),
        value,
    )
    info = st.fixed_dictionaries(
        {},
        optional={
            "reminderContent": value,
            "reminderTitle": value,
            "senderNick": value,
            "senderUserId": value,
            "reminderUrl": value,
            "bizTag": value,
            "extJson": value,
        },
    )
    message = st.fixed_dictionaries(
        {10: info},
        optional={
            1: value,
            2: value,
            3: value,
            5: value,
            6: st.fixed_dictionaries({3: st.fixed_dictionaries({4: st.one_of(st.just(26), value), 5: card})}),
        },
    )
    return st.fixed_dictionaries({1: st.one_of(message, value)}, optional={3: value, "chatType": value})


@FAST
@given(st.one_of(_tree(_msgpack_leaves), _message_shaped(_msgpack_leaves)))
def test_random_msgpack_structures_only_raise_malformed_push(doc: Any) -> None:
    try:
        raw = msgpack.packb(doc, use_bin_type=True)
    except (ValueError, OverflowError, TypeError):
        return  # not representable as MessagePack
    _decodes_or_malformed(base64.b64encode(raw).decode())


@FAST
@given(st.one_of(_tree(_json_leaves), _message_shaped(_json_leaves)))
def test_random_json_structures_only_raise_malformed_push(doc: Any) -> None:
    try:
        raw = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return  # integers beyond 64 bits
    _decodes_or_malformed(base64.b64encode(raw).decode())


@FAST
@given(st.text(max_size=300))
def test_parse_frame_on_random_text_only_raises_malformed_frame(text: str) -> None:
    for parse in (parse_frame, parse_client_frame):
        try:
            inbound = parse(text)
        except MalformedFrame:
            continue
        assert isinstance(inbound, Inbound)


_frame_values = _tree(_json_leaves)
_frames = st.fixed_dictionaries(
    {},
    optional={
        "lwp": st.one_of(st.sampled_from(["/s/para", "/s/sync", "/!"]), _frame_values),
        "code": st.one_of(st.just(200), _frame_values),
        "headers": st.one_of(
            st.fixed_dictionaries({}, optional={"mid": _frame_values, "sid": _frame_values}), _frame_values
        ),
        "body": st.one_of(st.fixed_dictionaries({"syncPushPackage": _frame_values}), _frame_values),
    },
)


@FAST
@given(_frames)
def test_parse_frame_on_random_json_objects_only_raises_malformed_frame(frame: dict[str, Any]) -> None:
    raw = json.dumps(frame)
    for parse in (parse_frame, parse_client_frame):
        with contextlib.suppress(MalformedFrame):
            assert isinstance(parse(raw), Inbound)
    ack = ack_frame(frame)
    assert ack is None or ack["code"] == 200


_good_payloads = st.one_of(
    chat_messages(own=False).map(lambda m: encode_chat_message(m, receiver_id=SELLER)),
    chat_messages(own=True).map(lambda m: encode_chat_message(m, receiver_id="1")),
)
_items = st.one_of(
    st.fixed_dictionaries({"bizType": st.just(40), "data": _good_payloads}),
    st.fixed_dictionaries(
        {"data": st.one_of(st.text(max_size=60), st.binary(max_size=60).map(lambda b: base64.b64encode(b).decode()))}
    ),
    _tree(_json_leaves),
)
_push_frames = st.one_of(
    st.fixed_dictionaries(
        {
            "lwp": st.just("/s/para"),
            "body": st.fixed_dictionaries(
                {"syncPushPackage": st.fixed_dictionaries({"data": st.lists(_items, max_size=6)})}
            ),
        }
    ),
    _frames,
)


@QUICK
@given(_push_frames)
def test_decode_push_never_raises_and_accounts_for_every_item(frame: dict[str, Any]) -> None:
    result = decode_push(frame, own_id=SELLER)
    assert isinstance(result, DecodedPush)
    assert all(isinstance(e, EVENT_TYPES) for e in result.events)
    assert all(isinstance(e, MalformedPush) for e in result.errors)
    body = frame.get("body")
    package = body.get("syncPushPackage") if isinstance(body, dict) else None
    items = package.get("data") if isinstance(package, dict) else None
    if isinstance(items, list):
        assert len(result.events) + len(result.errors) == len(items)
    else:
        assert result.events == () and len(result.errors) == 1


_content_docs = st.one_of(
    _tree(_json_leaves),
    st.fixed_dictionaries({"contentType": st.sampled_from([1, 2, 26, "1", None]), "text": _tree(_json_leaves)}),
    st.fixed_dictionaries(
        {"contentType": st.just(2), "image": st.fixed_dictionaries({"pics": st.lists(_tree(_json_leaves), max_size=2)})}
    ),
)


@FAST
@given(st.one_of(_content_docs.map(lambda d: base64.b64encode(json.dumps(d).encode()).decode()), st.text(max_size=80)))
def test_decode_content_only_raises_malformed_frame(data: str) -> None:
    with contextlib.suppress(MalformedFrame):
        decode_content(data)
