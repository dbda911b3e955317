from decimal import Decimal

import pytest

from xianyu_autoreply.replies.bargain import (
    SAFE_PLATFORM_TEXT,
    SAFE_PRICE_REFUSAL,
    OfferKind,
    check_offers,
    find_off_platform,
    find_offers,
    guard_answer,
    is_bargaining,
    lowest_price,
    parse_number,
)
from xianyu_autoreply.replies.settings import AISettings

PRICE, AMOUNT_OFF, PERCENT_OFF = OfferKind.PRICE, OfferKind.AMOUNT_OFF, OfferKind.PERCENT_OFF
# Item at 100: at most 10% or 20 off, so the floor is 90; three rounds of haggling.
LIMITS = AISettings(max_discount_percent=10, max_discount_amount=20, max_bargain_rounds=3)
ITEM_PRICE = Decimal(100)


def verdict(text: str, *, price: Decimal | None = ITEM_PRICE, round_: int = 1) -> str | None:
    return check_offers(text, item_price=price, settings=LIMITS, bargain_round=round_).reason


# --- reading offers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("最低80元", PRICE, "80"),
        ("¥80可以", PRICE, "80"),
        ("￥ 79.5", PRICE, "79.5"),
        ("80块拿走", PRICE, "80"),
        ("八十元吧", PRICE, "80"),
        ("七十五块给你", PRICE, "75"),
        ("一百五十元", PRICE, "150"),
        ("一百五元", PRICE, "150"),
        ("一百零五块", PRICE, "105"),
        ("两千三块", PRICE, "2300"),
        ("便宜到80", PRICE, "80"),
        ("算你85", PRICE, "85"),
        ("80包邮", PRICE, "80"),
        ("90出", PRICE, "90"),
        ("减20元", AMOUNT_OFF, "20"),
        ("少20", AMOUNT_OFF, "20"),
        ("给你便宜二十块", AMOUNT_OFF, "20"),
        ("优惠15", AMOUNT_OFF, "15"),
        ("少你10块", AMOUNT_OFF, "10"),
        ("打9折", PERCENT_OFF, "10"),
        ("九折", PERCENT_OFF, "10"),
        ("8.5折", PERCENT_OFF, "15"),
        ("八五折", PERCENT_OFF, "15"),
        ("打个九五折", PERCENT_OFF, "5"),
        ("九点五折", PERCENT_OFF, "5"),
        ("便宜10%", PERCENT_OFF, "10"),
        ("优惠百分之十", PERCENT_OFF, "10"),
        ("10% off", PERCENT_OFF, "10"),
    ],
)
def test_offer_is_read_from_numbers_words_and_percentages(text: str, kind: OfferKind, value: str) -> None:
    offers = find_offers(text)
    assert [(o.kind, o.value) for o in offers] == [(kind, Decimal(value))]


@pytest.mark.parametrize(
    "text", ["可以便宜一点吧", "不打折哦", "99新", "这个折叠椅很好", "最少也要", "用了2年", "包邮的", "多少钱都行"]
)
def test_words_that_offer_nothing_are_not_offers(text: str) -> None:
    assert find_offers(text) == []


def test_every_offer_in_an_answer_is_read() -> None:
    offers = find_offers("原价120元，现在打9折，再少5块")
    assert [(o.kind, o.value) for o in offers] == [
        (PERCENT_OFF, Decimal(10)),
        (AMOUNT_OFF, Decimal(5)),
        (PRICE, Decimal(120)),
    ]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("75", "75"),
        ("9.5", "9.5"),
        ("七十五", "75"),
        ("十五", "15"),
        ("一百五", "150"),
        ("两千三", "2300"),
        ("一万二", "12000"),
        ("三千零五十", "3050"),
        ("一五零", "150"),
        ("九点五", "9.5"),
        ("两百", "200"),
    ],
)
def test_chinese_numbers_are_parsed(raw: str, value: str) -> None:
    assert parse_number(raw) == Decimal(value)


# --- limits --------------------------------------------------------------------------------------------------


def test_lowest_price_takes_the_stricter_limit() -> None:
    assert lowest_price(Decimal(100), settings=LIMITS) == Decimal(90)  # 10% beats 20 yuan
    assert lowest_price(Decimal(1000), settings=LIMITS) == Decimal(980)  # 20 yuan beats 10%


@pytest.mark.parametrize(
    "text", ["最低90元", "九十块", "九十五块给你", "打9折", "九五折", "便宜10%", "少10元", "减十块"]
)
def test_offer_within_the_limits_is_allowed(text: str) -> None:
    assert verdict(text) is None


@pytest.mark.parametrize(
    "text",
    ["80元给你", "¥85", "八十元吧", "七十五块", "打8折", "八五折", "便宜15%", "优惠百分之二十", "便宜到85"],
)
def test_offer_below_the_floor_is_refused(text: str) -> None:
    assert verdict(text) == "discount_too_large"


def test_amount_off_above_the_amount_limit_is_refused() -> None:
    assert verdict("减30元", price=Decimal(1000)) == "discount_too_large"


def test_percentage_above_the_percent_limit_is_refused_even_without_a_price() -> None:
    assert verdict("打8折", price=None) == "discount_too_large"


def test_price_that_cannot_be_checked_is_refused() -> None:
    assert verdict("95元", price=None) == "price_unknown"


def test_concession_after_the_last_bargain_round_is_refused() -> None:
    assert verdict("95元", round_=3) is None
    assert verdict("95元", round_=4) == "bargain_rounds_exceeded"


def test_the_full_price_is_always_allowed() -> None:
    assert verdict("100元包邮", round_=9) is None
    assert verdict("原价120元", round_=9) is None


def test_answer_without_offers_is_allowed() -> None:
    assert verdict("亲，这个已经是最低价了哦", round_=9) is None


def test_zero_limits_allow_no_discount() -> None:
    strict = AISettings(max_discount_percent=0, max_discount_amount=0)
    assert check_offers("99元", item_price=ITEM_PRICE, settings=strict, bargain_round=1).reason == "discount_too_large"


def test_guard_replaces_an_excessive_offer_with_a_refusal() -> None:
    guarded = guard_answer("好吧，八十元卖你", item_price=ITEM_PRICE, settings=LIMITS, bargain_round=1)
    assert (guarded.text, guarded.original, guarded.blocked) == (
        SAFE_PRICE_REFUSAL,
        "好吧，八十元卖你",
        "price:discount_too_large",
    )


def test_guard_lets_an_allowed_answer_through_unchanged() -> None:
    guarded = guard_answer("可以，95元包邮", item_price=ITEM_PRICE, settings=LIMITS, bargain_round=1)
    assert (guarded.text, guarded.blocked) == ("可以，95元包邮", None)


# --- off the platform ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("加我微信聊", "微信"),
        ("add me on WeChat", "WeChat"),
        ("vx: abc123", "vx"),
        ("加V信", "V信"),
        ("我QQ是12345", "QQ"),
        ("支付宝转我", "支付宝"),
        ("pay by Alipay", "Alipay"),
        ("打到银行卡", "银行卡"),
        ("send to my bank card", "bank card"),
        ("电话13812345678", "13812345678"),
        ("call 138 1234 5678", "138 1234 5678"),
        ("我们线下交易吧", "线下"),
    ],
)
def test_answer_steering_off_the_platform_is_blocked(text: str, word: str) -> None:
    assert find_off_platform(text) == word
    guarded = guard_answer(text, item_price=ITEM_PRICE, settings=LIMITS, bargain_round=0)
    assert (guarded.text, guarded.blocked) == (SAFE_PLATFORM_TEXT, f"off_platform:{word}")


@pytest.mark.parametrize("text", ["在闲鱼上直接拍就行", "订单号12345678901234", "qqq", "vxyz", "12812345678"])
def test_ordinary_answer_is_not_blocked(text: str) -> None:
    assert find_off_platform(text) is None


@pytest.mark.parametrize("text", ["能便宜点吗", "最低多少", "80出吗", "可以小刀吗", "打个折呗", "诚心要，少点"])
def test_haggling_is_recognised(text: str) -> None:
    assert is_bargaining(text)


@pytest.mark.parametrize("text", ["在吗", "成色怎么样", "什么时候发货"])
def test_questions_are_not_haggling(text: str) -> None:
    assert not is_bargaining(text)
