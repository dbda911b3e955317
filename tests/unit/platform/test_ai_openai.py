import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import pytest
import respx

from xianyu_autoreply.platform.ai import (
    AIEmptyAnswer,
    AIReplier,
    AIReplyError,
    AIRequestFailed,
    AITimeout,
    OpenAIClient,
)
from xianyu_autoreply.replies.bargain import SAFE_PLATFORM_TEXT, SAFE_PRICE_REFUSAL
from xianyu_autoreply.replies.prompt import AIQuery, ChatFacts, Turn
from xianyu_autoreply.replies.settings import AISettings

BASE_URL = "http://ai.test/v1"
COMPLETIONS = f"{BASE_URL}/chat/completions"
SETTINGS = AISettings(
    enabled=True,
    base_url=BASE_URL,
    model="test-model",
    api_key="sk-test",
    max_discount_percent=10,
    max_discount_amount=20,
    max_bargain_rounds=2,
    prompt="周末不发货。",
)
QUERY = AIQuery(
    chat_id="c1",
    buyer_text="90块可以吗",
    buyer_name="阿明",
    item_id="42",
    facts=ChatFacts(item_title="富士X100V相机", item_price=Decimal(100)),
    bargain_round=1,
)
HISTORY = [Turn("你好，相机还在吗", from_buyer=True), Turn("在的，成色很好", from_buyer=False)]


def completion(content: str | None) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        },
    )


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def replier() -> AsyncIterator[AIReplier]:
    # 5 s: the SDK's first request in a process detects the platform in a thread (~1.5 s, more on a busy box).
    async with AIReplier(SETTINGS, account_name="老张的店", timeout_s=5, max_retries=0) as ai:
        yield ai


async def test_answer_is_returned(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(return_value=completion("可以的，90元包邮"))
    answer = await replier.reply(QUERY, history=HISTORY)
    assert (answer.text, answer.original, answer.blocked, answer.model) == (
        "可以的，90元包邮",
        "可以的，90元包邮",
        None,
        "test-model",
    )


async def test_request_carries_the_prompt_history_and_message(api: respx.MockRouter, replier: AIReplier) -> None:
    route = api.post(COMPLETIONS).mock(return_value=completion("在的"))
    await replier.reply(QUERY, history=HISTORY)
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["model"] == "test-model"
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in messages[1:]] == ["你好，相机还在吗", "在的，成色很好", "90块可以吗"]
    system = messages[0]["content"]
    for expected in ("老张的店", "富士X100V相机", "标价：100元", "不得低于90元", "已还价1次", "周末不发货。", "微信"):
        assert expected in system


async def test_offer_below_the_floor_is_replaced_by_a_refusal(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(return_value=completion("好吧，八十元卖你"))
    answer = await replier.reply(QUERY)
    assert (answer.text, answer.original, answer.blocked) == (
        SAFE_PRICE_REFUSAL,
        "好吧，八十元卖你",
        "price:discount_too_large",
    )


async def test_percentage_offer_past_the_rounds_is_refused(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(return_value=completion("那就打个九五折吧"))
    answer = await replier.reply(AIQuery("c1", "再便宜点", "阿明", "42", QUERY.facts, bargain_round=3))
    assert (answer.text, answer.blocked) == (SAFE_PRICE_REFUSAL, "price:bargain_rounds_exceeded")


async def test_off_platform_answer_is_blocked(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(return_value=completion("加我微信 abc123，私聊"))
    answer = await replier.reply(QUERY)
    assert (answer.text, answer.blocked) == (SAFE_PLATFORM_TEXT, "off_platform:微信")


async def test_server_error_is_an_ai_failure(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(return_value=httpx.Response(500, json={"error": {"message": "boom"}}))
    with pytest.raises(AIRequestFailed) as failed:
        await replier.reply(QUERY)
    assert isinstance(failed.value.__cause__, Exception)


async def test_server_error_is_retried_as_configured(api: respx.MockRouter) -> None:
    route = api.post(COMPLETIONS).mock(
        side_effect=[httpx.Response(500, json={"error": {"message": "boom"}}), completion("在的")]
    )
    async with AIReplier(SETTINGS, timeout_s=5, max_retries=1) as ai:
        assert (await ai.reply(QUERY)).text == "在的"
    assert route.call_count == 2


async def test_unreachable_endpoint_is_an_ai_failure(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(AIRequestFailed):
        await replier.reply(QUERY)


async def test_transport_timeout_is_an_ai_timeout(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(AITimeout):
        await replier.reply(QUERY)


async def test_slow_answer_times_out_within_the_budget(api: respx.MockRouter) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return completion("too late")

    api.post(COMPLETIONS).mock(side_effect=slow)
    async with AIReplier(SETTINGS, timeout_s=0.2, max_retries=3) as ai:
        started = time.monotonic()
        with pytest.raises(AITimeout):
            await ai.reply(QUERY)
        assert time.monotonic() - started < 2


async def test_empty_answer_is_an_ai_failure(api: respx.MockRouter, replier: AIReplier) -> None:
    api.post(COMPLETIONS).mock(return_value=completion("  "))
    with pytest.raises(AIEmptyAnswer):
        await replier.reply(QUERY)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json={}),
        httpx.Response(200, json={"choices": []}),
        httpx.Response(200, json={"choices": [{"message": {}}]}),
    ],
)
async def test_malformed_answer_is_an_ai_failure(
    api: respx.MockRouter, replier: AIReplier, response: httpx.Response
) -> None:
    api.post(COMPLETIONS).mock(return_value=response)
    with pytest.raises(AIReplyError):
        await replier.reply(QUERY)


async def test_account_without_key_never_sends_the_environment_key(
    api: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-environment")
    route = api.post(COMPLETIONS).mock(return_value=completion("在的"))
    async with AIReplier(AISettings(enabled=True, base_url=BASE_URL, model="m"), max_retries=0) as ai:
        await ai.reply(QUERY)
    assert "sk-from-environment" not in route.calls.last.request.headers["authorization"]


async def test_one_slow_chat_does_not_delay_another(api: respx.MockRouter) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        text = json.loads(request.content)["messages"][-1]["content"]
        if text == "slow":
            await asyncio.sleep(1.0)
        return completion(f"re: {text}")

    api.post(COMPLETIONS).mock(side_effect=answer)
    async with AIReplier(SETTINGS, timeout_s=5, max_retries=0) as ai:
        slow = asyncio.create_task(ai.reply(AIQuery("c1", "slow", "a", None)))
        started = time.monotonic()
        fast = await ai.reply(AIQuery("c2", "fast", "b", None))
        assert fast.text == "re: fast"
        assert time.monotonic() - started < 0.5
        assert (await slow).text == "re: slow"


async def test_one_client_follows_changed_settings(api: respx.MockRouter) -> None:
    other = "http://other.test/v1"
    first = api.post(COMPLETIONS).mock(return_value=completion("一"))
    second = api.post(f"{other}/chat/completions").mock(return_value=completion("二"))
    client = OpenAIClient(timeout_s=5, max_retries=0)
    try:
        messages = [{"role": "user", "content": "在吗"}]
        assert await client.complete(messages, SETTINGS) == "一"
        changed = AISettings(enabled=True, base_url=other, model="m2", api_key="sk-other")
        assert await client.complete(messages, changed) == "二"
    finally:
        await client.aclose()
    assert first.calls.last.request.headers["authorization"] == "Bearer sk-test"
    assert second.calls.last.request.headers["authorization"] == "Bearer sk-other"
    assert json.loads(second.calls.last.request.content)["model"] == "m2"
