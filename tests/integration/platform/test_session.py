"""AccountSession against the simulator on loopback: one reply per message, survival of every fault."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from xianyu_autoreply.config import SessionSettings
from xianyu_autoreply.engine.pipeline import AccountPipeline, Steps
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import (
    AccountSession,
    ConnectionState,
    ReconnectPolicy,
    Reply,
    SessionOutcome,
    StateChange,
)
from xianyu_autoreply.protocol import BuyerMessage, SellerMessage
from xianyu_autoreply.replies.admission import Incoming
from xianyu_autoreply.simulator import Simulator

from ...polling import eventually

FAST = SessionSettings(heartbeat_interval=0.5, heartbeat_timeout=1.5, message_expire=300)
FAST_POLICY = ReconnectPolicy(base=0.05, cap=0.3, stable_after=1.0, login_check_after=5, risk_backoff=0.5)


class Harness:
    """A session on one simulated seller, read by a pipeline without a store; records states and decisions."""

    def __init__(self, sim: Simulator, mtop: MtopClient, seller: dict[str, str]) -> None:
        self.sim = sim
        self.mtop = mtop
        self.seller = seller
        self.states: list[StateChange] = []
        self.decided: list[Incoming] = []
        self.verifications: list[str | None] = []
        self.session: AccountSession | None = None
        self.pipeline: AccountPipeline | None = None
        self.task: asyncio.Task[SessionOutcome] | None = None

    async def decide(self, incoming: Incoming) -> Reply | None:
        self.decided.append(incoming)
        event = incoming.event
        if isinstance(event, BuyerMessage):
            return Reply(text=f"re: {event.text}", source="test")
        return None

    async def verification(self, url: str | None) -> None:
        self.verifications.append(url)

    def start(
        self,
        *,
        decide: Callable[[Incoming], Awaitable[Reply | None]] | None = None,
        record: Callable[[Sequence[Incoming]], Awaitable[Sequence[bool]]] | None = None,
        settings: SessionSettings = FAST,
        policy: ReconnectPolicy = FAST_POLICY,
    ) -> AccountSession:
        self.session = AccountSession(
            account_id=self.seller["unb"],
            cookie=self.seller["cookie"],
            ws_url=self.sim.ws_url,
            mtop=self.mtop,
            settings=settings,
            policy=policy,
            on_state=self.states.append,
            on_verification=self.verification,
        )
        self.pipeline = AccountPipeline(self.session, Steps(decide=decide or self.decide, record=record))
        self.task = asyncio.create_task(self.pipeline.run())
        return self.session

    async def connected(self, timeout: float = 10.0) -> None:
        await eventually(lambda: self.session is not None and self.session.connected, timeout=timeout)

    async def stop(self) -> None:
        if self.pipeline is not None:
            await self.pipeline.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 15)

    def sent(self, **kwargs: Any) -> list[dict[str, Any]]:
        return self.sim.sent(seller=self.seller["unb"], **kwargs)

    def state_names(self) -> list[str]:
        return [s.state.value for s in self.states]


@pytest.fixture
async def harness(sim: Simulator, mtop: MtopClient) -> AsyncIterator[Harness]:
    h = Harness(sim, mtop, sim.create_seller(nick="test shop"))
    try:
        yield h
    finally:
        await h.stop()


async def test_buyer_message_gets_exactly_one_reply(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    pushed = harness.sim.push_message(seller=harness.seller["unb"], text="还在吗")
    sent = await eventually(lambda: harness.sent(chat_id=pushed["chat_id"]))
    await asyncio.sleep(0.5)
    sent = harness.sent(chat_id=pushed["chat_id"])
    assert [s["text"] for s in sent] == ["re: 还在吗"]
    assert sent[0]["to"] == pushed["buyer"]


async def test_same_text_twice_gets_two_replies(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    first = harness.sim.push_message(seller=harness.seller["unb"], text="在吗")
    harness.sim.push_message(seller=harness.seller["unb"], text="在吗", buyer=first["buyer"], chat_id=first["chat_id"])
    await eventually(lambda: len(harness.sent(chat_id=first["chat_id"])) == 2)
    await asyncio.sleep(0.3)
    assert len(harness.sent(chat_id=first["chat_id"])) == 2


async def test_redelivered_message_id_gets_no_reply_even_across_a_restart(harness: Harness) -> None:
    claimed: set[str] = set()  # stands in for the durable store the engine provides

    async def record(admitted: Sequence[Incoming]) -> list[bool]:
        fresh = [incoming.key not in claimed for incoming in admitted]
        claimed.update(incoming.key for incoming in admitted if incoming.key is not None)
        return fresh

    harness.start(record=record)
    await harness.connected()
    first = harness.sim.push_message(seller=harness.seller["unb"], text="价格多少", message_id="dup-1")
    await eventually(lambda: harness.sent(chat_id=first["chat_id"]))
    harness.sim.push_message(
        seller=harness.seller["unb"],
        text="价格多少",
        message_id="dup-1",
        chat_id=first["chat_id"],
        buyer=first["buyer"],
    )
    await asyncio.sleep(0.5)
    assert len(harness.sent(chat_id=first["chat_id"])) == 1

    await harness.stop()
    harness.start(record=record)  # a new session: its in-memory memory is empty, the durable claim is not
    await harness.connected()
    harness.sim.push_message(
        seller=harness.seller["unb"],
        text="价格多少",
        message_id="dup-1",
        chat_id=first["chat_id"],
        buyer=first["buyer"],
    )
    await asyncio.sleep(0.7)
    assert len(harness.sent(chat_id=first["chat_id"])) == 1


async def test_a_push_with_three_messages_gets_three_replies(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    seller = harness.seller["unb"]
    pushed = harness.sim.push_messages(seller=seller, messages=[{"text": "one"}, {"text": "two"}, {"text": "three"}])
    assert len(pushed) == 3
    await eventually(lambda: len(harness.sent()) == 3)
    assert sorted(s["text"] for s in harness.sent()) == ["re: one", "re: three", "re: two"]


async def test_an_expired_message_is_recorded_but_not_answered(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    old = int(time.time() * 1000) - 3_600_000
    harness.sim.push_message(seller=harness.seller["unb"], text="old question", created_ms=old)
    harness.sim.push_message(seller=harness.seller["unb"], text="new question")
    await eventually(lambda: len(harness.sent()) == 1)
    await asyncio.sleep(0.3)
    assert [s["text"] for s in harness.sent()] == ["re: new question"]
    assert harness.pipeline is not None and harness.pipeline.stats.expired == 1


async def test_own_echo_is_flagged_and_a_message_typed_elsewhere_is_not(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    seller = harness.seller["unb"]
    pushed = harness.sim.push_message(seller=seller, text="hello")
    echo = await eventually(
        lambda: [i for i in harness.decided if isinstance(i.event, SellerMessage) and i.event.text == "re: hello"]
    )
    assert echo[0].own_echo is True
    harness.sim.push_message(
        seller=seller, text="我来回答", chat_id=pushed["chat_id"], buyer=pushed["buyer"], from_seller=True
    )
    typed = await eventually(
        lambda: [i for i in harness.decided if isinstance(i.event, SellerMessage) and i.event.text == "我来回答"]
    )
    assert typed[0].own_echo is False


async def test_slow_decision_in_one_chat_does_not_delay_other_chats(harness: Harness) -> None:
    async def decide(incoming: Incoming) -> Reply | None:
        event = incoming.event
        if not isinstance(event, BuyerMessage):
            return None
        if event.text == "slow":
            await asyncio.sleep(5)
        return Reply(text=f"re: {event.text}")

    session = harness.start(decide=decide)
    await harness.connected()
    seller = harness.seller["unb"]
    beats_before = session.stats.heartbeats
    harness.sim.push_message(seller=seller, text="slow")
    started = time.monotonic()
    for n in range(5):
        harness.sim.push_message(seller=seller, text=f"fast {n}")
    await eventually(lambda: len(harness.sent()) == 5, timeout=4)
    assert time.monotonic() - started < 3
    assert all(s["text"].startswith("re: fast") for s in harness.sent())
    await asyncio.sleep(2.0)
    assert session.stats.heartbeats - beats_before >= 3  # heartbeats kept their 0.5 s period meanwhile
    await eventually(lambda: len(harness.sent()) == 6, timeout=6)


@pytest.mark.parametrize(
    ("fault", "extra"),
    [("drop", {}), ("close", {"code": 1000}), ("close", {"code": 1011})],
)
async def test_connection_faults_reconnect_and_answer_again(
    harness: Harness, fault: str, extra: dict[str, Any]
) -> None:
    session = harness.start()
    await harness.connected()
    harness.sim.set_fault(fault, seller=harness.seller["unb"], **extra)
    await eventually(lambda: "reconnecting" in harness.state_names())
    expected = "aborted" if fault == "drop" else "closed_by_server"
    assert expected in session.stats.reconnect_reasons, session.stats.reconnect_reasons
    await harness.connected()
    harness.sim.clear_faults()
    await harness.connected()
    harness.sim.push_message(seller=harness.seller["unb"], text="after fault")
    await eventually(lambda: [s for s in harness.sent() if s["text"] == "re: after fault"])


async def test_silence_is_detected_within_timeout_plus_one_interval(harness: Harness) -> None:
    session = harness.start()
    await harness.connected()
    harness.sim.set_fault("silence", seller=harness.seller["unb"], seconds=30)
    started = time.monotonic()
    await eventually(lambda: session.state is not ConnectionState.CONNECTED, timeout=10)
    detected = time.monotonic() - started
    assert detected <= FAST.heartbeat_timeout + FAST.heartbeat_interval + 0.5
    assert session.stats.reconnect_reasons.get("heartbeat_timeout", 0) >= 1
    harness.sim.clear_faults()
    await harness.connected()
    harness.sim.push_message(seller=harness.seller["unb"], text="back")
    await eventually(lambda: [s for s in harness.sent() if s["text"] == "re: back"])


async def test_expired_token_is_replaced_and_the_account_answers_again(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    harness.sim.set_fault("expire_token", seller=harness.seller["unb"])
    await eventually(lambda: "reconnecting" in harness.state_names())
    await harness.connected()
    harness.sim.clear_faults()
    harness.sim.push_message(seller=harness.seller["unb"], text="token ok?")
    await eventually(lambda: [s for s in harness.sent() if s["text"] == "re: token ok?"])


@pytest.mark.parametrize("fault", ["reject_reg", "refuse", "slow", "garbage"])
async def test_transient_faults_are_survived(harness: Harness, fault: str) -> None:
    session = harness.start()
    await harness.connected()
    seconds = 1.0 if fault == "slow" else 2.0
    harness.sim.set_fault(fault, seller=harness.seller["unb"], seconds=seconds)
    if fault in ("reject_reg", "refuse"):
        harness.sim.set_fault("drop", seller=harness.seller["unb"])  # force a reconnect into the fault
        await eventually(lambda: "reconnecting" in harness.state_names())
    if fault == "garbage":
        await eventually(lambda: session.stats.malformed > 0)
    await asyncio.sleep(seconds + 0.2)
    harness.sim.clear_faults()
    await harness.connected(timeout=15)
    harness.sim.push_message(seller=harness.seller["unb"], text=f"after {fault}")
    await eventually(lambda: [s for s in harness.sent() if s["text"] == f"re: after {fault}"], timeout=15)


async def test_lost_login_ends_in_auth_expired_without_a_hot_loop(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    harness.sim.set_fault("session_expired", seller=harness.seller["unb"])
    harness.sim.set_fault("drop", seller=harness.seller["unb"])
    assert harness.task is not None
    outcome = await asyncio.wait_for(harness.task, 20)
    assert outcome is SessionOutcome.AUTH_EXPIRED
    assert "failed" in harness.state_names()
    connections = harness.sim.connections(seller=harness.seller["unb"])
    assert len(connections) <= 3  # it stopped trying instead of hammering the platform


async def test_risk_control_takes_a_slot_notifies_and_recovers(harness: Harness) -> None:
    harness.start()
    await harness.connected()
    assert harness.session is not None
    harness.session._token = None
    harness.sim.set_fault("risk_control", seller=harness.seller["unb"], seconds=1.0)
    harness.sim.set_fault("drop", seller=harness.seller["unb"])
    await eventually(lambda: harness.verifications, timeout=10)
    assert harness.verifications[0] and "captcha" in harness.verifications[0]
    harness.sim.clear_faults()
    await harness.connected(timeout=15)


async def test_close_stops_everything_and_says_going_away(harness: Harness) -> None:
    session = harness.start()
    await harness.connected()
    started = time.monotonic()
    await session.close()
    assert time.monotonic() - started < 10
    assert session.state is ConnectionState.CLOSED
    assert not session._tasks
    conns = await eventually(
        lambda: [c for c in harness.sim.connections(seller=harness.seller["unb"]) if c["closed_ms"]]
    )
    assert conns[-1].get("close_code") in (1001, None)
