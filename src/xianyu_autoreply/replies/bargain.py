"""The bargaining guard and the off-platform filter, applied to every AI answer before a buyer sees it.

A model follows its prompt most of the time; these checks make the limits hold all of the time. `find_offers`
reads every price or discount an answer offers, written as

- a price: `80元`, `¥80`, `￥80`, `80块`, `八十元`, `七十五块`, `便宜到80`, `80包邮`, `80出`;
- an amount off: `减20元`, `少20`, `便宜二十块`, `优惠20`;
- a percentage off: `打9折`, `九折`, `8.5折`, `八五折`, `便宜10%`, `优惠百分之十`, `10% off`;

and `check_offers` compares them with the item price and the account's limits (`max_discount_percent`,
`max_discount_amount`, `max_bargain_rounds`). It errs on the side of refusing: a price we cannot check (the item
price is unknown) or a number that only looks like a price (`运费10元`) makes the answer a polite refusal, which
costs a sale less often than an unauthorised discount costs the seller.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from .settings import AISettings

SAFE_PRICE_REFUSAL = "不好意思，这个价格已经很实在了，没办法再便宜了哦～"
SAFE_PLATFORM_TEXT = "为了保障双方的交易安全，请在闲鱼平台内沟通和交易哦～"

_HUNDRED = Decimal(100)

_CN_DIGITS = {
    char: digit
    for digit, chars in enumerate(("零〇", "一", "二两", "三", "四", "五", "六", "七", "八", "九"))
    for char in chars
}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN = "零〇一二两三四五六七八九十百千万"
_NUM = rf"(?:\d+(?:\.\d+)?|[{_CN}]+(?:点[{_CN}]+)?)"
_CURRENCY_AFTER = r"(?:元|块钱|块|圆|rmb|RMB)"
_OFF_VERB = r"(?:便宜|优惠|减|降|少|让|砍|抹)"
_FILLER = r"(?:了|您|你|给您|给你|个|掉|去|再)*"


class OfferKind(enum.StrEnum):
    """What a number in an answer concedes."""

    PRICE = "price"  # the buyer would pay this much
    AMOUNT_OFF = "amount_off"  # this much less than the item price
    PERCENT_OFF = "percent_off"  # this percentage less than the item price


@dataclass(frozen=True, slots=True)
class Offer:
    """One price or discount found in an answer, with the words it came from."""

    kind: OfferKind
    value: Decimal
    words: str


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """The guard's judgement of an answer: `reason` is None when it may be sent as it is."""

    reason: str | None
    offers: tuple[Offer, ...] = ()

    @property
    def allowed(self) -> bool:
        """True when the answer keeps every limit."""
        return self.reason is None


@dataclass(frozen=True, slots=True)
class GuardedAnswer:
    """What is sent instead of (or as) the model's answer, and why it was replaced if it was."""

    text: str
    original: str
    blocked: str | None  # "off_platform:<word>", "price:<reason>", or None when sent unchanged


# Order matters: an earlier pattern claims its span, so `减20元` is an amount off and not also a price of 20.
_PATTERNS = (
    (OfferKind.PERCENT_OFF, re.compile(rf"(?:打\s*个?\s*)?(?P<zhe>{_NUM})\s*折(?!旧|叠|腾|扣)")),
    (
        OfferKind.PERCENT_OFF,
        re.compile(
            rf"(?:{_OFF_VERB}|折扣|打折){_FILLER}\s*(?:(?P<pct>\d+(?:\.\d+)?)\s*[%％]|百分之(?P<cnpct>{_NUM}))"
            rf"|(?P<pct_off>\d+(?:\.\d+)?)\s*[%％]\s*(?:off|OFF|Off|的?折扣|的?优惠)"
        ),
    ),
    (
        OfferKind.PRICE,
        re.compile(
            rf"(?:(?:便宜|降|减|少|让|算|卖)(?:到|至|成)|(?:算|卖|给)(?:你|您))\s*(?P<n>{_NUM})"
            rf"\s*(?P<unit>{_CURRENCY_AFTER})?(?![\d%％折])"
        ),
    ),
    (
        OfferKind.AMOUNT_OFF,
        # Not 最少/至少/多少/不少: those are "at least", "how much", "a lot".
        re.compile(rf"(?<![最至多不]){_OFF_VERB}{_FILLER}\s*(?P<n>{_NUM})\s*(?P<unit>{_CURRENCY_AFTER})?(?![\d%％折])"),
    ),
    (
        OfferKind.PRICE,
        re.compile(
            rf"(?:[¥￥]|rmb|RMB)\s*(?P<n>\d+(?:\.\d+)?)"
            rf"|(?P<n2>{_NUM})\s*(?P<unit>{_CURRENCY_AFTER})"
            rf"|(?P<n3>\d+(?:\.\d+)?)\s*(?:包邮|出|拿走|给你|给您|卖你|卖您|成交)"
        ),
    ),
)

_OFF_PLATFORM = re.compile(
    r"微信|威信|薇信|[vV]信|(?<![a-zA-Z])(?:vx|VX|Vx|wx|WX|weixin|wechat|WeChat|Wechat|qq|QQ|Qq|alipay|Alipay|zfb)"
    r"(?![a-zA-Z])|扣扣|企鹅号|支付宝|银行卡|银行账户|银行账号|(?i:bank\s*card|bank\s*account)|线下|面交|私下交易|"
    r"手机号|(?<!\d)1[3-9]\d(?:[\s-]?\d){8}(?!\d)"
)

_BARGAINING = re.compile(
    r"便宜|优惠|砍|小刀|少点|少一点|少些|能少|最低|底价|打个?折|折扣|降价|还价|议价|让利|诚心要|"
    rf"{_NUM}\s*{_CURRENCY_AFTER}?\s*(?:出|卖|行吗|行不|可以吗|包邮吗|能不能|拿)"
)


def find_offers(text: str) -> list[Offer]:
    """Every price or discount the text offers, in the order of the kinds above."""
    offers: list[Offer] = []
    claimed: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for found in pattern.finditer(text):
            start, end = found.span()
            if any(start < c_end and c_start < end for c_start, c_end in claimed):
                continue
            offer = _offer(kind, found)
            if offer is not None:
                offers.append(offer)
                claimed.append((start, end))
    return offers


def _offer(kind: OfferKind, found: re.Match[str]) -> Offer | None:
    groups = {name: value for name, value in found.groupdict().items() if value}
    words = found.group()
    if "zhe" in groups:
        factor = _zhe_factor(groups["zhe"])
        return None if factor is None else Offer(kind, _HUNDRED - factor * _HUNDRED, words)
    for name in ("pct", "pct_off"):
        if name in groups:
            return Offer(kind, Decimal(groups[name]), words)
    if "cnpct" in groups:
        value = parse_number(groups["cnpct"])
        return None if value is None else Offer(kind, value, words)
    raw = groups.get("n") or groups.get("n2") or groups.get("n3")
    if raw is None:
        return None
    value = parse_number(raw)
    if value is None:
        return None
    if not raw[0].isdigit() and "unit" not in groups and value < 2:
        # A bare small Chinese numeral is "a little", not an amount: 便宜一点, 少一些.
        return None
    return Offer(kind, value, words)


def _zhe_factor(raw: str) -> Decimal | None:
    # 九折 = 90% of the price, 八五折 / 85折 / 8.5折 = 85%: Chinese digits in 折 are read one by one.
    if not raw[0].isdigit() and not any(c in _CN_UNITS or c == "万" for c in raw):
        raw = "".join(str(_CN_DIGITS[c]) if c in _CN_DIGITS else "." for c in raw)
    value = parse_number(raw)
    if value is None or value <= 0:
        return None
    if value < 10:
        return value / 10
    if value < 100:
        return value / _HUNDRED
    return None


def parse_number(raw: str) -> Decimal | None:
    """A number written in digits (`75`, `9.5`) or Chinese (`七十五`, `一百五`, `两千三`, `九点五`), or None."""
    try:
        if raw[:1].isdigit():
            return Decimal(raw)
    except InvalidOperation:
        return None
    whole, _, fraction = raw.partition("点")
    value = _parse_cn_integer(whole) if whole else Decimal(0)
    if value is None:
        return None
    if fraction:
        if any(c not in _CN_DIGITS for c in fraction):
            return None
        value += Decimal("0." + "".join(str(_CN_DIGITS[c]) for c in fraction))
    return value


def _parse_cn_integer(raw: str) -> Decimal | None:
    if any(c not in _CN_DIGITS and c not in _CN_UNITS and c != "万" for c in raw):
        return None
    if not any(c in _CN_UNITS or c == "万" for c in raw):
        # Digit by digit: 一五零 = 150.
        return Decimal("".join(str(_CN_DIGITS[c]) for c in raw))
    total = section = digit = 0
    last_unit = 1
    after_zero = False
    previous_was_unit = False
    for char in raw:
        if char in _CN_DIGITS:
            digit = _CN_DIGITS[char]
            after_zero = after_zero or digit == 0
            previous_was_unit = False
        elif char in _CN_UNITS:
            unit = _CN_UNITS[char]
            section += (digit or (1 if char == "十" else 0)) * unit
            digit, last_unit, after_zero, previous_was_unit = 0, unit, False, True
        else:  # 万
            total += (section + digit) * 10_000
            section = digit = 0
            last_unit, after_zero, previous_was_unit = 10_000, False, True
    if digit and not previous_was_unit and last_unit >= 100 and not after_zero:
        # Colloquial: 一百五 = 150, 两千三 = 2300, 一万二 = 12000.
        section += digit * (last_unit // 10)
    else:
        section += digit
    return Decimal(total + section)


def lowest_price(item_price: Decimal, *, settings: AISettings) -> Decimal:
    """The lowest price both discount limits allow for an item (the stricter limit wins)."""
    by_percent = item_price * (_HUNDRED - Decimal(str(settings.max_discount_percent))) / _HUNDRED
    by_amount = item_price - Decimal(str(settings.max_discount_amount))
    return max(by_percent, by_amount, Decimal(0))


def check_offers(text: str, *, item_price: Decimal | None, settings: AISettings, bargain_round: int) -> GuardVerdict:
    """Judge the prices and discounts an answer offers against the account's limits and the bargaining rounds."""
    offers = tuple(find_offers(text))
    max_percent = Decimal(str(settings.max_discount_percent))
    max_amount = Decimal(str(settings.max_discount_amount))
    floor = lowest_price(item_price, settings=settings) if item_price is not None else None
    for offer in offers:
        paid: Decimal | None  # what the buyer would pay, when the item price is known
        if offer.kind is OfferKind.PRICE:
            if item_price is None or floor is None:
                return GuardVerdict("price_unknown", offers)
            if offer.value >= item_price:
                continue
            paid = offer.value
        elif offer.kind is OfferKind.AMOUNT_OFF:
            if offer.value <= 0:
                continue
            if offer.value > max_amount:
                return GuardVerdict("discount_too_large", offers)
            paid = item_price - offer.value if item_price is not None else None
        else:
            if offer.value <= 0:
                continue
            if offer.value > max_percent:
                return GuardVerdict("discount_too_large", offers)
            paid = item_price * (_HUNDRED - offer.value) / _HUNDRED if item_price is not None else None
        # Past here the offer concedes something.
        if bargain_round > settings.max_bargain_rounds:
            return GuardVerdict("bargain_rounds_exceeded", offers)
        if paid is not None and floor is not None and paid < floor:
            return GuardVerdict("discount_too_large", offers)
    return GuardVerdict(None, offers)


def find_off_platform(text: str) -> str | None:
    """The words by which a text steers the buyer off the platform (WeChat, QQ, Alipay, bank card, phone), or None."""
    found = _OFF_PLATFORM.search(text)
    return found.group() if found else None


def is_bargaining(text: str) -> bool:
    """True when a buyer's message haggles over the price (counts a bargaining round)."""
    return _BARGAINING.search(text) is not None


def guard_answer(text: str, *, item_price: Decimal | None, settings: AISettings, bargain_round: int) -> GuardedAnswer:
    """The text to send for a model's answer: unchanged, or a safe text when it breaks a rule."""
    word = find_off_platform(text)
    if word is not None:
        return GuardedAnswer(SAFE_PLATFORM_TEXT, text, f"off_platform:{word}")
    verdict = check_offers(text, item_price=item_price, settings=settings, bargain_round=bargain_round)
    if not verdict.allowed:
        return GuardedAnswer(SAFE_PRICE_REFUSAL, text, f"price:{verdict.reason}")
    return GuardedAnswer(text, text, None)
