"""Closing an account's pipeline while a buyer message is being answered: the answer still goes out, once, then 1001.

The platform never pushes a message twice, so a handler cut off by `close()` would leave the buyer unanswered.
"""

from __future__ import annotations

import asyncio
import time

from xianyu_autoreply.engine.pipeline import AccountPipeline, Steps
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import AccountSession, Reply, SessionOutcome
from xianyu_autoreply.protocol import BuyerMessage
from xianyu_autoreply.replies.admission import Incoming
from xianyu_autoreply.simulator import Simulator

from .test_session import FAST, FAST_POLICY, eventually


class SlowDecide:
    """A decision that starts at once and answers only after `delay` seconds (a slow AI)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = asyncio.Event()

    async def __call__(self, incoming: Incoming) -> Reply | None:
        self.started.set()
        await asyncio.sleep(self.delay)
        event = incoming.event
        return Reply(text=f"re: {event.text}", source="test") if isinstance(event, BuyerMessage) else None


async def _running(
    sim: Simulator, mtop: MtopClient, decide: SlowDecide
) -> tuple[AccountPipeline, dict[str, str], asyncio.Task[SessionOutcome]]:
    seller = sim.create_seller()
    session = AccountSession(
        account_id=seller["unb"],
        cookie=seller["cookie"],
        ws_url=sim.ws_url,
        mtop=mtop,
        settings=FAST,
        policy=FAST_POLICY,
    )
    pipeline = AccountPipeline(session, Steps(decide=decide))
    task = asyncio.create_task(pipeline.run())
    await eventually(lambda: session.connected)
    return pipeline, seller, task


def _closed(sim: Simulator, seller: str) -> list[dict[str, object]]:
    return [c for c in sim.connections(seller=seller) if c["closed_ms"]]


async def test_a_message_in_flight_when_close_is_called_is_answered_once_before_1001(
    sim: Simulator, mtop: MtopClient
) -> None:
    decide = SlowDecide(1.0)
    pipeline, seller, task = await _running(sim, mtop, decide)
    session = pipeline.session
    pushed = sim.push_message(seller["unb"], "还有货吗")
    await asyncio.wait_for(decide.started.wait(), 5)

    await pipeline.close(timeout=5.0, drain=5.0)
    assert await task is SessionOutcome.CLOSED

    sent = sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])
    assert [s["text"] for s in sent] == ["re: 还有货吗"]
    closed = await eventually(lambda: _closed(sim, seller["unb"]))
    assert closed[-1]["close_code"] == 1001
    assert closed[-1]["closed_ms"] >= sent[0]["at_ms"]  # the reply went out on the open socket, then it closed
    assert session.stats.replies_out == 1 and session.stats.send_failures == 0
    await asyncio.sleep(0.3)
    assert len(sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"])) == 1


async def test_the_drain_is_bounded_by_its_timeout(sim: Simulator, mtop: MtopClient) -> None:
    decide = SlowDecide(30.0)  # never done in time
    pipeline, seller, task = await _running(sim, mtop, decide)
    session = pipeline.session
    pushed = sim.push_message(seller["unb"], "在吗")
    await asyncio.wait_for(decide.started.wait(), 5)

    started = time.monotonic()
    await pipeline.close(timeout=5.0, drain=0.5)
    took = time.monotonic() - started
    assert await task is SessionOutcome.CLOSED

    assert 0.5 <= took < 2.5
    assert sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]) == []
    closed = await eventually(lambda: _closed(sim, seller["unb"]))
    assert closed[-1]["close_code"] == 1001
    assert not session._tasks
