"""Replies through the whole engine against the simulator: rules, item rules, defaults, takeover, debounce, AI."""

from __future__ import annotations

import asyncio
from typing import Any

from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, AiSettingsUpdate, Rule

from .conftest import eventually


async def live_account(engine: AccountScheduler, sim: Simulator, **settings: Any) -> dict[str, str]:
    seller = sim.create_seller(nick="测试店")
    await engine.add("a", seller["cookie"])
    if settings:
        await engine.set_settings("a", AccountSettings(**settings))
    await eventually(lambda: engine.state("a").lifecycle is Lifecycle.RUNNING)
    return seller


def texts(sim: Simulator, seller: dict[str, str], chat_id: str | None = None) -> list[str]:
    return [s["text"] for s in sim.sent(seller=seller["unb"], chat_id=chat_id)]


async def test_item_rules_win_over_general_rules_and_templates_are_filled(
    engine: AccountScheduler, sim: Simulator
) -> None:
    seller = await live_account(engine, sim)
    item = sim.create_item(seller["unb"], title="二手键盘", price="120")
    other = sim.create_item(seller["unb"], title="鼠标", price="30")
    await engine.set_rules(
        "a",
        [
            Rule("发货", "通用：24小时内发货", id="general"),
            Rule("发货", "键盘今天发货，{buyer_name}", id="keyboard", item_id=item["item_id"]),
        ],
    )
    on_item = sim.push_message(seller=seller["unb"], text="什么时候发货", item_id=item["item_id"], buyer_nick="小王")
    elsewhere = sim.push_message(seller=seller["unb"], text="什么时候发货", item_id=other["item_id"])
    await eventually(lambda: texts(sim, seller, on_item["chat_id"]) and texts(sim, seller, elsewhere["chat_id"]))
    assert texts(sim, seller, on_item["chat_id"]) == ["键盘今天发货，小王"]
    assert texts(sim, seller, elsewhere["chat_id"]) == ["通用：24小时内发货"]


async def test_default_reply_once_per_chat(engine: AccountScheduler, sim: Simulator) -> None:
    seller = await live_account(engine, sim, default_reply="您好，稍等", default_reply_once_per_chat=True)
    first = sim.push_message(seller=seller["unb"], text="在吗")
    await eventually(lambda: texts(sim, seller, first["chat_id"]))
    sim.push_message(seller=seller["unb"], text="还在吗", chat_id=first["chat_id"], buyer=first["buyer"])
    other = sim.push_message(seller=seller["unb"], text="在吗")
    await eventually(lambda: texts(sim, seller, other["chat_id"]))
    await asyncio.sleep(0.5)
    assert texts(sim, seller, first["chat_id"]) == ["您好，稍等"]
    assert texts(sim, seller, other["chat_id"]) == ["您好，稍等"]


async def test_manual_takeover_pauses_the_chat_and_it_resumes_after_the_pause(
    engine: AccountScheduler, sim: Simulator
) -> None:
    seller = await live_account(engine, sim, default_reply="自动回复", pause_minutes=0.02)  # 1.2 s
    first = sim.push_message(seller=seller["unb"], text="在吗")
    await eventually(lambda: texts(sim, seller, first["chat_id"]))  # our reply; its echo must not pause
    chat, buyer = first["chat_id"], first["buyer"]
    sim.push_message(seller=seller["unb"], text="还有货吗", chat_id=chat, buyer=buyer)
    await eventually(lambda: len(texts(sim, seller, chat)) == 2)
    sim.push_message(seller=seller["unb"], text="我亲自来回答", chat_id=chat, buyer=buyer, from_seller=True)
    await asyncio.sleep(0.2)
    sim.push_message(seller=seller["unb"], text="那便宜点吧", chat_id=chat, buyer=buyer)
    await asyncio.sleep(0.5)
    assert len(texts(sim, seller, chat)) == 2  # paused
    await asyncio.sleep(1.0)
    sim.push_message(seller=seller["unb"], text="还在吗", chat_id=chat, buyer=buyer)
    await eventually(lambda: len(texts(sim, seller, chat)) == 3)  # the pause is over


async def test_a_burst_gets_one_answer_to_its_last_message(engine: AccountScheduler, sim: Simulator) -> None:
    seller = await live_account(engine, sim, debounce_seconds=0.5)
    await engine.set_rules("a", [Rule("价格", "不议价"), Rule("发货", "马上发")])
    first = sim.push_message(seller=seller["unb"], text="价格多少")
    sim.push_message(seller=seller["unb"], text="什么时候发货", chat_id=first["chat_id"], buyer=first["buyer"])
    await eventually(lambda: texts(sim, seller, first["chat_id"]))
    await asyncio.sleep(0.8)
    assert texts(sim, seller, first["chat_id"]) == ["马上发"]


async def test_ai_reply_uses_the_history_and_falls_back_on_timeout(engine: AccountScheduler, sim: Simulator) -> None:
    seller = await live_account(engine, sim, default_reply="人工客服稍后回复")
    ai = AiSettingsUpdate(enabled=True, base_url=sim.openai_url, model="demo-model", api_key="sk-test-ai-key")
    await engine.set_settings("a", AccountSettings(default_reply="人工客服稍后回复"), ai=ai)
    sim.set_ai(reply="这款还有货，欢迎下单", api_key="sk-test-ai-key")
    first = sim.push_message(seller=seller["unb"], text="这个还有吗")
    await eventually(lambda: texts(sim, seller, first["chat_id"]))
    assert texts(sim, seller, first["chat_id"]) == ["这款还有货，欢迎下单"]
    sim.push_message(seller=seller["unb"], text="能包邮吗", chat_id=first["chat_id"], buyer=first["buyer"])
    await eventually(lambda: len(texts(sim, seller, first["chat_id"])) == 2)
    requests = sim.ai_requests(api_key="sk-test-ai-key")
    history = [m["content"] for m in requests[-1]["messages"]]
    assert any("这个还有吗" in c for c in history) and any("这款还有货" in c for c in history)
    assert "能包邮吗" in history[-1]

    sim.set_ai(reply="太慢了", delay=30, api_key="sk-test-ai-key")
    sim.push_message(seller=seller["unb"], text="在吗", chat_id=first["chat_id"], buyer=first["buyer"])
    await eventually(lambda: len(texts(sim, seller, first["chat_id"])) == 3, timeout=10)  # after the 2 s AI limit
    assert texts(sim, seller, first["chat_id"])[-1] == "人工客服稍后回复"


async def test_the_ai_cannot_concede_more_than_the_seller_allows(engine: AccountScheduler, sim: Simulator) -> None:
    seller = await live_account(engine, sim)
    item = sim.create_item(seller["unb"], title="耳机", price="100")
    ai = AiSettingsUpdate(enabled=True, base_url=sim.openai_url, model="m", api_key="sk-guard", max_discount_percent=10)
    await engine.set_settings("a", AccountSettings(), ai=ai)
    sim.set_ai(reply="可以，算你五十块吧", api_key="sk-guard")
    pushed = sim.push_message(seller=seller["unb"], text="五十卖不卖", item_id=item["item_id"])
    await eventually(lambda: texts(sim, seller, pushed["chat_id"]))
    answer = texts(sim, seller, pushed["chat_id"])[0]
    assert "五十" not in answer and "50" not in answer
