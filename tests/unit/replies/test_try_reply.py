from dataclasses import replace

from xianyu_autoreply.replies.rules import ReplyKind, Rule, RuleIndex
from xianyu_autoreply.replies.settings import AISettings, ReplySettings
from xianyu_autoreply.replies.try_it import TryResult, try_reply

RULES = RuleIndex.build(
    [
        Rule("价格", "{buyer_name}你好，不议价", id="price"),
        Rule("价格", "这件包邮", item_id="42", id="item"),
        Rule("实拍", "https://img.example/p.jpg", kind=ReplyKind.IMAGE, id="photo"),
    ]
)
SETTINGS = ReplySettings(default_reply="稍等哦", debounce_seconds=3)


def test_try_shows_the_rule_reply_and_its_source() -> None:
    assert try_reply("价格多少", rules=RULES, settings=SETTINGS) == TryResult(
        "买家你好，不议价", "rule:price", "rule_matched"
    )


def test_try_uses_the_item_rule_for_its_item() -> None:
    assert try_reply("价格多少", item_id="42", rules=RULES, settings=SETTINGS).source == "rule:item"


def test_try_shows_an_image_reply() -> None:
    result = try_reply("有实拍吗", rules=RULES, settings=SETTINGS)
    assert (result.reply, result.kind) == ("https://img.example/p.jpg", ReplyKind.IMAGE)


def test_try_shows_the_default_reply() -> None:
    assert try_reply("成色如何", rules=RULES, settings=SETTINGS) == TryResult("稍等哦", "default", "default_reply")


def test_try_says_why_nothing_would_be_sent() -> None:
    result = try_reply("成色如何", rules=RULES, settings=replace(SETTINGS, default_reply=""))
    assert result == TryResult(None, "none", "no_match")


def test_try_says_when_the_ai_would_answer() -> None:
    settings = replace(SETTINGS, ai=AISettings(enabled=True, model="m"))
    result = try_reply("成色如何", item_id="42", rules=RULES, settings=settings)
    assert (result.reply, result.source, result.reason, result.fallback_reply) == (None, "ai", "ask_ai", "稍等哦")
    assert result.ai_query is not None
    assert (result.ai_query.buyer_text, result.ai_query.item_id) == ("成色如何", "42")


def test_try_does_not_wait_for_debounce() -> None:
    assert try_reply("价格", rules=RULES, settings=SETTINGS).reply is not None


def test_try_treats_platform_texts_like_the_policy() -> None:
    assert try_reply("[我已拍下，待付款]", rules=RULES, settings=SETTINGS).reason == "system_message"
