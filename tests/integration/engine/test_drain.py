"""Stopping an account while the AI is still answering one of its buyers: the answer goes out, exactly once.

Engine stop (SIGTERM), disabling the account and a cookie update all stop the session; a pushed message is never
pushed again, so the session lets the messages it is handling finish before it closes with 1001.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, AiSettingsUpdate, Direction

from .conftest import eventually

AI_KEY = "sk-drain"
AI_ANSWER = "有货的，亲"

Stop = Callable[[AccountScheduler, dict[str, str]], Awaitable[object]]


async def _stop_engine(engine: AccountScheduler, seller: dict[str, str]) -> None:
    await engine.stop()


async def _disable(engine: AccountScheduler, seller: dict[str, str]) -> None:
    await engine.set_enabled("a", False)


async def _new_cookie(engine: AccountScheduler, seller: dict[str, str]) -> None:
    await engine.update_cookie("a", seller["cookie"])


@pytest.mark.parametrize("stop", [_stop_engine, _disable, _new_cookie], ids=["engine_stop", "disable", "cookie"])
async def test_a_message_the_ai_is_still_answering_is_answered_once_when_the_session_stops(
    engine: AccountScheduler, sim: Simulator, stop: Stop
) -> None:
    seller = sim.create_seller(nick="测试店")
    await engine.add("a", seller["cookie"])
    ai = AiSettingsUpdate(enabled=True, base_url=sim.openai_url, model="m", api_key=AI_KEY)
    await engine.set_settings("a", AccountSettings(default_reply="稍等"), ai=ai)
    sim.set_ai(reply=AI_ANSWER, delay=1.0, api_key=AI_KEY)  # under the engine's 2 s AI limit
    await eventually(lambda: engine.state("a").lifecycle is Lifecycle.RUNNING)

    pushed = sim.push_message(seller["unb"], "还有货吗")
    await eventually(lambda: sim.ai_requests(api_key=AI_KEY))  # claimed, logged, waiting for the AI

    await stop(engine, seller)

    sent = sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])
    assert [s["text"] for s in sent] == [AI_ANSWER]  # the AI's answer, not the fallback after a cut-off
    closed = [c for c in sim.connections(seller=seller["unb"]) if c["closed_ms"]]
    assert closed and closed[0]["close_code"] == 1001 and closed[0]["closed_ms"] >= sent[0]["at_ms"]
    await asyncio.sleep(0.5)  # a restarted session (cookie update) must not answer it again
    assert len(sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])) == 1
    await engine.store.log_writer.flush()
    log = await engine.store.list_messages("a", chat_id=pushed["chat_id"])
    assert [m.text for m in log if m.direction is Direction.OUT] == [AI_ANSWER]
    assert [m.status for m in log if m.message_id == pushed["message_id"]] == ["replied"]
