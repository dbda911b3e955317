"""Nothing acknowledged is ever lost: a push is ACKed only after its owner recorded it, and never when it refused.

The simulator keeps a push outstanding until one connection of the seller ACKs it and pushes it again to the
seller's next connection (simulator README), so a push left unACKed comes back after a reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from xianyu_autoreply.platform.errors import NotRecorded
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.protocol import BuyerMessage, encode_payload
from xianyu_autoreply.replies.admission import Incoming
from xianyu_autoreply.simulator import Simulator

from ...polling import eventually
from .test_session import Harness


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(echo_sends=False)  # only the pushes a test makes, so ACK counts are theirs
    await simulator.start(host="127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def harness(sim: Simulator, mtop: MtopClient) -> AsyncIterator[Harness]:
    h = Harness(sim, mtop, sim.create_seller(nick="ack shop"))
    try:
        yield h
    finally:
        await h.stop()


def live(harness: Harness) -> dict:
    (conn,) = [c for c in harness.sim.connections(seller=harness.seller["unb"]) if c["closed_ms"] is None]
    return conn


async def test_a_push_is_acknowledged_only_after_its_items_are_recorded(harness: Harness) -> None:
    recorded = asyncio.Event()
    commit = asyncio.Event()

    async def record(admitted: Sequence[Incoming]) -> list[bool]:
        recorded.set()
        await commit.wait()  # the group commit, held open
        return [True] * len(admitted)

    harness.start(record=record)
    await harness.connected()
    harness.sim.push_message(harness.seller["unb"], "还在吗")
    await asyncio.wait_for(recorded.wait(), 5)
    await asyncio.sleep(0.3)
    assert live(harness)["unacked"] == 1 and live(harness)["acks"] == 0
    assert harness.sent() == []

    commit.set()
    await eventually(lambda: live(harness)["acks"] == 1)
    await eventually(lambda: len(harness.sent()) == 1)
    assert live(harness)["unacked"] == 0


async def test_a_push_whose_record_is_refused_is_not_acknowledged_and_comes_again(harness: Harness) -> None:
    calls: list[list[str]] = []

    async def record(admitted: Sequence[Incoming]) -> list[bool]:
        calls.append([a.key or "" for a in admitted])
        if len(calls) == 1:
            raise NotRecorded("the lease of bucket 7 moved on")
        return [True] * len(admitted)

    harness.start(record=record)
    await harness.connected()
    pushed = harness.sim.push_message(harness.seller["unb"], "价格多少")
    await eventually(lambda: len(calls) == 1)
    await asyncio.sleep(0.3)
    assert live(harness)["unacked"] == 1
    assert harness.sent() == [] and harness.pipeline is not None and harness.pipeline.stats.unrecorded == 1

    harness.sim.set_fault("drop", seller=harness.seller["unb"])  # the connection dies; the session reconnects
    await eventually(lambda: len(calls) == 2, timeout=10)
    assert calls[1] == calls[0] == [pushed["message_id"]]
    replies = await eventually(lambda: harness.sent(chat_id=pushed["chat_id"]), timeout=10)
    await asyncio.sleep(0.3)
    assert [r["text"] for r in harness.sent(chat_id=pushed["chat_id"])] == ["re: 价格多少"] == [replies[0]["text"]]
    assert harness.sim.stats()["redelivered"] == 1


async def test_a_push_recorded_before_is_acknowledged_and_not_handled_again(harness: Harness) -> None:
    async def record(admitted: Sequence[Incoming]) -> list[bool]:
        return [False] * len(admitted)  # all seen before (e.g. recorded just before a crash, resumed by the engine)

    harness.start(record=record)
    await harness.connected()
    harness.sim.push_message(harness.seller["unb"], "在吗")
    await eventually(lambda: live(harness)["acks"] == 1)
    await asyncio.sleep(0.3)
    assert harness.sent() == [] and harness.decided == []
    assert harness.pipeline is not None and harness.pipeline.stats.duplicates == 1


async def test_a_poison_push_is_counted_and_acknowledged_so_it_never_loops(harness: Harness) -> None:
    async def record(admitted: Sequence[Incoming]) -> list[bool]:
        return [True] * len(admitted)

    harness.start(record=record)
    await harness.connected()
    harness.sim.push_raw(harness.seller["unb"], ["%%% not base64 %%%", encode_payload({"1": "x"})])
    await eventually(lambda: live(harness)["acks"] == 1)
    assert harness.pipeline is not None
    assert harness.session is not None and harness.session.stats.malformed >= 1
    assert harness.pipeline.stats.unrecorded == 0


async def test_a_draining_session_handles_what_arrives_or_leaves_it_unacknowledged(harness: Harness) -> None:
    slow = asyncio.Event()

    async def decide(incoming: Incoming):  # type: ignore[no-untyped-def]
        event = incoming.event
        if isinstance(event, BuyerMessage) and event.text == "first":
            await slow.wait()
        return await harness.decide(incoming)

    async def record(admitted: Sequence[Incoming]) -> list[bool]:
        return [True] * len(admitted)

    harness.start(decide=decide, record=record)
    await harness.connected()
    first = harness.sim.push_message(harness.seller["unb"], "first")
    await eventually(lambda: live(harness)["acks"] == 1)
    assert harness.pipeline is not None
    closing = asyncio.create_task(harness.pipeline.close(timeout=10, drain=5))
    await asyncio.sleep(0.2)
    second = harness.sim.push_message(harness.seller["unb"], "second")  # arrives while draining
    await asyncio.sleep(0.2)
    slow.set()
    await closing
    replies = {r["chat_id"] for r in harness.sim.sent(seller=harness.seller["unb"])}
    assert first["chat_id"] in replies
    record_of = {c["id"]: c for c in harness.sim.connections(seller=harness.seller["unb"])}
    (conn,) = record_of.values()
    # Handled (ACKed and answered) or left for the platform to push again (not ACKed): never ACKed and dropped.
    assert (second["chat_id"] in replies and conn["acks"] == 2) or (
        second["chat_id"] not in replies and conn["unacked"] >= 1
    )
