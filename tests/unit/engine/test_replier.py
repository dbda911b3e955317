import asyncio
import itertools

from xianyu_autoreply.engine.replier import AccountReplier, Decided
from xianyu_autoreply.protocol import BuyerMessage, SellerMessage, now_ms
from xianyu_autoreply.replies import ReplySettings, Rule, RuleIndex
from xianyu_autoreply.replies.admission import Incoming

_ids = itertools.count()


def buyer(text: str, *, chat: str = "c1") -> Incoming:
    return Incoming(BuyerMessage(f"m{next(_ids)}", chat, "b1", "Buyer", "1234567890", text, 1, now_ms()), now_ms())


def seller(text: str, *, echo: bool, chat: str = "c1") -> Incoming:
    msg = SellerMessage(f"s{next(_ids)}", chat, "s1", "Shop", "1234567890", text, 1, now_ms())
    return Incoming(msg, now_ms(), own_echo=echo)


def replier(**settings: object) -> tuple[AccountReplier, list[Decided]]:
    log: list[Decided] = []

    async def record(d: Decided) -> None:
        log.append(d)

    rules = RuleIndex.build([Rule("价格", "不议价哦，{buyer_name}", id="r1")])
    r = AccountReplier(
        account_id="a1",
        rules=rules,
        settings=ReplySettings(default_reply="您好，在的", **settings),  # type: ignore[arg-type]
        on_decision=record,
    )
    return r, log


async def test_rule_reply_carries_its_source_and_renders_variables() -> None:
    r, log = replier()
    reply = await r.decide(buyer("价格多少"))
    assert reply is not None and reply.text == "不议价哦，Buyer" and reply.source == "rule:r1"
    assert log[-1].decision.reason == "rule_matched"


async def test_no_rule_falls_back_to_the_default_reply() -> None:
    r, _ = replier()
    reply = await r.decide(buyer("在吗"))
    assert reply is not None and reply.text == "您好，在的" and reply.source == "default"


async def test_own_echo_does_not_pause_the_chat() -> None:
    r, log = replier()
    await r.decide(seller("您好，在的", echo=True))
    assert log[-1].decision.reason == "own_echo"
    assert await r.decide(buyer("在吗")) is not None


async def test_seller_typing_elsewhere_pauses_the_chat_only() -> None:
    r, log = replier(pause_minutes=10)
    await r.decide(seller("我来", echo=False))
    assert log[-1].decision.reason == "manual_takeover"
    assert await r.decide(buyer("在吗")) is None
    assert log[-1].decision.reason == "paused"
    assert await r.decide(buyer("在吗", chat="c2")) is not None


async def test_rule_changes_apply_to_the_next_message() -> None:
    r, _ = replier()
    r.update(rules=RuleIndex.build([Rule("在吗", "在的在的", id="r2")]))
    reply = await r.decide(buyer("在吗"))
    assert reply is not None and reply.text == "在的在的" and reply.source == "rule:r2"


async def test_a_burst_gets_one_answer_to_its_last_message() -> None:
    r, _ = replier(debounce_seconds=0.2)
    results = await asyncio.gather(r.decide(buyer("在吗")), r.decide(buyer("价格多少")))
    assert results[0] is None
    assert results[1] is not None and results[1].source == "rule:r1"


async def test_manual_reply_through_the_api_pauses_the_chat() -> None:
    r, _ = replier(pause_minutes=5)
    r.pause_chat("c1")
    assert await r.decide(buyer("在吗")) is None
