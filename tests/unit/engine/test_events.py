"""Events as frozen dataclasses: one type per kind, the SSE frame as before, and subscribers filtered by type."""

import asyncio
import dataclasses

import pytest

from xianyu_autoreply.api.routes.events import _frame
from xianyu_autoreply.engine.events import EventBus, EventsDropped, ReplyFailed, ReplySent, StockLow, event_types


def test_every_kind_is_one_type() -> None:
    kinds = [t.kind for t in event_types()]
    assert len(kinds) == len(set(kinds)) == 19
    assert "reply.sent" in kinds and "events.dropped" in kinds


def test_an_event_is_frozen() -> None:
    event = StockLow(account_id="a", rule_id=1, available=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.available = 3  # type: ignore[misc]


def test_the_sse_frame_is_the_kind_then_kind_account_time_and_the_fields_in_order() -> None:
    event = ReplySent(account_id="a", chat_id="c", text="好", source="rule:1", error=None, in_reply_to="m", at_ms=5)
    assert _frame(event) == (
        b"event: reply.sent\n"
        b'data: {"kind":"reply.sent","account_id":"a","at_ms":5,"chat_id":"c","text":"\xe5\xa5\xbd",'
        b'"source":"rule:1","error":null,"in_reply_to":"m"}\n\n'
    )
    dropped = EventsDropped(count=3, at_ms=7)
    assert (
        _frame(dropped)
        == b'event: events.dropped\ndata: {"kind":"events.dropped","account_id":null,"at_ms":7,"count":3}\n\n'
    )


async def test_a_subscriber_gets_only_the_types_it_asked_for() -> None:
    bus = EventBus()
    with bus.listening(types={ReplyFailed}) as failures, bus.listening() as everything:
        sent = ReplySent(account_id="a", chat_id="c", text="x", source="", error=None, in_reply_to=None)
        failed = ReplyFailed(account_id="a", chat_id="c", text="x", source="", error="boom", in_reply_to=None)
        bus.publish(sent)
        bus.publish(failed)
        assert await asyncio.wait_for(failures.get(), 1) is failed
        assert failures.queue.empty()
        assert [await everything.get(), await everything.get()] == [sent, failed]
