"""The OpenAI-compatible endpoint: deterministic answers, rules per key/model, recorded requests."""

from __future__ import annotations

import time

import httpx
import openai
import orjson

from xianyu_autoreply.simulator import Simulator


def chat(*turns: tuple[str, str], model: str = "sim-model") -> dict[str, object]:
    return {"model": model, "messages": [{"role": role, "content": text} for role, text in turns]}


async def test_answer_is_derived_from_the_last_user_message(sim: Simulator, http: httpx.AsyncClient) -> None:
    body = chat(("system", "你是客服"), ("user", "能便宜吗"), ("assistant", "不能"), ("user", "包邮吗"))
    first = (await http.post(f"{sim.openai_url}/chat/completions", json=body)).json()
    second = (await http.post(f"{sim.openai_url}/chat/completions", json=body)).json()
    answer = first["choices"][0]["message"]
    assert answer["role"] == "assistant" and "包邮吗" in answer["content"]
    assert second["choices"][0]["message"]["content"] == answer["content"]
    assert first["object"] == "chat.completion" and first["model"] == "sim-model"


async def test_requests_are_recorded_with_the_history_sent(sim: Simulator, http: httpx.AsyncClient) -> None:
    body = chat(("user", "在吗"), ("assistant", "在的"), ("user", "多少钱"))
    await http.post(f"{sim.openai_url}/chat/completions", json=body, headers={"Authorization": "Bearer key-1"})
    [recorded] = (await http.get(f"{sim.control_url}ai/requests")).json()
    assert recorded["messages"] == body["messages"] and recorded["api_key"] == "key-1"
    assert sim.ai_requests(api_key="other") == []


async def test_rules_give_a_fixed_reply_a_delay_or_an_error_per_key(sim: Simulator, http: httpx.AsyncClient) -> None:
    await http.post(f"{sim.control_url}ai", json={"reply": "固定回复", "api_key": "fixed"})
    await http.post(f"{sim.control_url}ai", json={"status": 500, "api_key": "broken"})
    await http.post(f"{sim.control_url}ai", json={"delay": 0.3, "model": "slow-model"})
    url = f"{sim.openai_url}/chat/completions"

    fixed = await http.post(url, json=chat(("user", "hi")), headers={"Authorization": "Bearer fixed"})
    assert fixed.json()["choices"][0]["message"]["content"] == "固定回复"
    broken = await http.post(url, json=chat(("user", "hi")), headers={"Authorization": "Bearer broken"})
    assert broken.status_code == 500 and broken.json()["error"]["type"] == "server_error"
    started = time.monotonic()
    await http.post(url, json=chat(("user", "hi"), model="slow-model"))
    assert time.monotonic() - started >= 0.3
    other = await http.post(url, json=chat(("user", "hi")), headers={"Authorization": "Bearer someone"})
    assert "hi" in other.json()["choices"][0]["message"]["content"]

    await http.delete(f"{sim.control_url}ai")
    assert sim.ai_requests() == [] and sim.ai.rules() == []


async def test_streaming_answers_with_server_sent_events(sim: Simulator, http: httpx.AsyncClient) -> None:
    sim.set_ai(reply="流式回复，分几段发出来看看")
    body = {**chat(("user", "hi")), "stream": True}
    response = await http.post(f"{sim.openai_url}/chat/completions", json=body)
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "流式回复，分几段发出来看看"


async def test_a_malformed_request_is_a_400_in_openai_shape(sim: Simulator, http: httpx.AsyncClient) -> None:
    for body in (b"{", b"[]", b'{"model": "m"}', b'{"model": "m", "messages": [1]}'):
        answer = await http.post(f"{sim.openai_url}/chat/completions", content=body)
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    assert (await http.get(f"{sim.openai_url}/models")).json()["data"][0]["id"] == "sim-model"


async def test_the_openai_sdk_talks_to_it(sim: Simulator) -> None:
    sim.set_ai(reply="SDK 收到", api_key="sdk-key")
    async with openai.AsyncOpenAI(base_url=sim.openai_url, api_key="sdk-key", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="sim-model", messages=[{"role": "user", "content": "你好"}]
        )
    assert completion.choices[0].message.content == "SDK 收到"
