"""The AI reply logic behind the `AIClient` seam, with an in-memory model: no HTTP, no SDK."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

import pytest

from xianyu_autoreply.engine.replier import AccountReplier, Decided
from xianyu_autoreply.platform.ai import AIReplier, AITimeout
from xianyu_autoreply.protocol import BuyerMessage, now_ms
from xianyu_autoreply.replies import SAFE_PLATFORM_TEXT, SAFE_PRICE_REFUSAL, AIEmptyAnswer, ReplySettings
from xianyu_autoreply.replies.admission import Incoming
from xianyu_autoreply.replies.prompt import AIQuery, ChatFacts, Turn
from xianyu_autoreply.replies.settings import AISettings

SETTINGS = AISettings(enabled=True, model="fake-model", max_discount_percent=10, max_bargain_rounds=2)
QUERY = AIQuery("c1", "90块可以吗", "阿明", "42", ChatFacts(item_title="相机", item_price=Decimal(100)), 1)


class FakeModel:
    """An `AIClient` answering from a script; what it was asked is kept in `asked`."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[list[dict[str, str]], AISettings]] = []
        self.closed = False

    async def complete(self, messages: Sequence[Mapping[str, str]], settings: AISettings) -> str:
        self.asked.append(([dict(m) for m in messages], settings))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        self.closed = True


async def test_the_client_gets_the_built_prompt_and_the_settings() -> None:
    model = FakeModel("在的")
    ai = AIReplier(SETTINGS, account_name="老张的店", client=model)
    answer = await ai.reply(QUERY, history=[Turn("你好", from_buyer=True), Turn("您好", from_buyer=False)])
    assert (answer.text, answer.blocked, answer.model) == ("在的", None, "fake-model")
    messages, settings = model.asked[0]
    assert settings is SETTINGS
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "90块可以吗"
    assert "老张的店" in messages[0]["content"] and "不得低于90元" in messages[0]["content"]


@pytest.mark.parametrize(
    ("said", "sent", "blocked"),
    [
        ("好吧，八十元卖你", SAFE_PRICE_REFUSAL, "price:discount_too_large"),
        ("加我微信 abc123", SAFE_PLATFORM_TEXT, "off_platform:微信"),
        ("  九十五元可以  ", "九十五元可以", None),
    ],
)
async def test_the_guards_judge_what_the_model_said(said: str, sent: str, blocked: str | None) -> None:
    answer = await AIReplier(SETTINGS, client=FakeModel(said)).reply(QUERY)
    assert (answer.text, answer.blocked) == (sent, blocked)


async def test_no_text_is_an_empty_answer() -> None:
    with pytest.raises(AIEmptyAnswer):
        await AIReplier(SETTINGS, client=FakeModel("   ")).reply(QUERY)


async def test_the_clients_typed_error_reaches_the_caller_and_a_given_client_stays_open() -> None:
    model = FakeModel(AITimeout("slow"))
    async with AIReplier(SETTINGS, client=model) as ai:
        with pytest.raises(AITimeout):
            await ai.reply(QUERY)
    assert not model.closed  # the caller gave it, the caller closes it


async def test_the_engine_falls_back_to_the_default_reply_when_the_model_fails() -> None:
    model = FakeModel(AITimeout("slow"), "在的，成色很好")
    log: list[Decided] = []

    async def record(decided: Decided) -> None:
        log.append(decided)

    replier = AccountReplier(
        account_id="a1",
        settings=ReplySettings(default_reply="您好，稍等", ai=SETTINGS),
        on_decision=record,
        ai_factory=lambda s: AIReplier(s.ai, account_name=s.account_name, client=model),
    )

    def buyer(mid: str, chat: str) -> Incoming:
        return Incoming(BuyerMessage(mid, chat, "b1", "阿明", "42", "还在吗", 1, now_ms()), now_ms())

    failed = await replier.decide(buyer("m1", "c1"))
    assert failed is not None and (failed.text, failed.source) == ("您好，稍等", "default")
    assert log[-1].error == "slow"
    answered = await replier.decide(buyer("m2", "c2"))
    assert answered is not None and (answered.text, answered.source) == ("在的，成色很好", "ai")
    await replier.aclose()
