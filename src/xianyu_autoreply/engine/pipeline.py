"""AccountPipeline: one account's messages, one way through — admit, record, acknowledge, decide, send, log.

The session is a connection (platform/session.py): the pipeline reads its pushes and writes its replies. Every push
goes through `take`, every new event through `answer`, each a straight line of named steps calling down:

    take(push):        admit (replies/admission.py) -> record (the store, one group commit) -> ack -> answer each new
    answer(incoming):  apply (orders) -> decide (the replier; claims the reply durably) -> send -> log

Nothing acknowledged is ever lost: a push is acknowledged only after `record` stored every item in it; one whose
record failed or was refused (`NotRecorded`: the lease moved on) is not acknowledged, so the platform pushes it
again. Without a `record` step (tests, the session benchmark) admission remembers message ids instead.
Each event is answered in its own task, bounded per account and per process, so a slow AI delays only its chat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from ..platform.cookie_jar import CookieJar
from ..platform.errors import NotRecorded
from ..platform.limits import ProcessLimits
from ..platform.session import AccountSession
from ..platform.values import Push, Reply, Sent, SessionOutcome
from ..protocol import BuyerMessage, ImageContent, new_uuid, now_ms
from ..replies.admission import Admission, Incoming

log = structlog.get_logger("xianyu_autoreply.pipeline")

Decide = Callable[[Incoming], Awaitable[Reply | None]]
# The durable record of a push's items: per item True when new (to be answered), False when recorded before.
Record = Callable[[Sequence[Incoming]], Awaitable[Sequence[bool]]]


async def _no_reply(incoming: Incoming) -> Reply | None:
    return None


@dataclass
class Steps:
    """The account's own steps, each a call down into the replier, the store or the order desk."""

    decide: Decide = _no_reply
    record: Record | None = None  # None: nothing durable; admission then drops duplicates from memory
    apply: Callable[[Incoming], Awaitable[None]] | None = None  # every new event before deciding (orders)
    log: Callable[[Sent], None] | None = None  # every send's outcome (conversation log, events); must not block


@dataclass
class PipelineStats:
    duplicates: int = 0  # recorded before (or remembered): not answered again
    expired: int = 0
    unrecorded: int = 0  # pushes left unacknowledged because their record failed or was refused


@dataclass
class _Work:
    """What the pipeline has in hand: pushes being recorded, events being answered (and their keys)."""

    takes: set[asyncio.Task[None]] = field(default_factory=set)
    answers: set[asyncio.Task[None]] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)


class AccountPipeline:
    """Reads one session and answers what it reads; `await run()` until `close()`."""

    def __init__(
        self,
        session: AccountSession,
        steps: Steps | None = None,
        *,
        limits: ProcessLimits | None = None,
    ) -> None:
        self.session = session
        self.steps = steps or Steps()
        self.stats = PipelineStats()
        self.admission = Admission(
            expire_ms=int(session.settings.message_expire * 1000), remember_ids=self.steps.record is None
        )
        self._limits = limits or ProcessLimits()
        self._slots = asyncio.Semaphore(session.settings.max_concurrent_messages)
        self._work = _Work()
        self._log = log.bind(account_id=session.account_id)

    @property
    def cookie_jar(self) -> CookieJar:
        """The account's live cookie, for MTOP calls made on its behalf (item detail, confirm shipment)."""
        return self.session.cookie_jar

    # --- running --------------------------------------------------------------------------------------------

    async def run(self) -> SessionOutcome:
        """Run the session and read it; returns how the session ended."""
        reader = asyncio.get_running_loop().create_task(self._read(), name=f"{self.session.account_id}:pipeline")
        try:
            return await self.session.run()
        finally:
            reader.cancel()
            work = [*self._work.takes, *self._work.answers]
            for task in work:
                task.cancel()
            await asyncio.wait([reader, *work], timeout=5.0)

    async def close(self, *, timeout: float = 10.0, drain: float = 0.0) -> None:
        """Stop taking pushes, let the answers in hand finish for up to `drain` seconds (of `timeout`), close.

        A pushed message acknowledged here is not pushed again, so one cut off would go unanswered; pushes
        arriving meanwhile stay unacknowledged and go to the next connection or owner.
        """
        self.session.hold()
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        await self._drain(min(drain, timeout))
        await self.session.close(timeout=max(0.0, until - loop.time()))

    async def send(
        self, chat_id: str, to_user: str, reply: Reply, *, in_reply_to: str | None = None, wait_s: float = 30.0
    ) -> Sent:
        """Send through the session and log the outcome; used for replies, deliveries and manual answers."""
        uuid = new_uuid()
        content = reply.content()
        text = None if isinstance(content, ImageContent) else content.text
        self.admission.sending(chat_id, text=text, uuid=uuid, now_ms=now_ms())  # its echo may come first
        sent = await self.session.send(chat_id, to_user, reply, in_reply_to=in_reply_to, uuid=uuid, wait_s=wait_s)
        if self.steps.log is not None:
            try:
                self.steps.log(sent)
            except Exception:
                self._log.exception("logging a send failed")
        return sent

    # --- what the owner's resume needs ----------------------------------------------------------------------

    def in_flight(self) -> frozenset[str]:
        """Keys of the events being answered here now (what a resume must leave alone)."""
        return frozenset(self._work.keys)

    async def recorded(self, timeout: float = 10.0) -> None:
        """Wait until the pushes being recorded now are recorded (each item then is in flight here, or was
        recorded before: a re-sent push whose row only a resume can finish)."""
        if self._work.takes:
            await asyncio.wait(set(self._work.takes), timeout=timeout)

    def resume(self, incoming: Incoming) -> bool:
        """Answer an event the owner recorded earlier and never finished; False when it is in flight here."""
        key = incoming.key
        if key is not None:
            if key in self._work.keys:
                return False
            self._work.keys.add(key)
        self._spawn(self.answer(incoming), self._work.answers, "answer")
        return True

    # --- the two straight lines -----------------------------------------------------------------------------

    async def _read(self) -> None:
        async for push in self.session:
            self._spawn(self.take(push), self._work.takes, "take")

    async def take(self, push: Push) -> None:
        """Admit, record, acknowledge, then answer each new item; no ACK for what was not recorded."""
        admitted = self._admit(push)
        fresh = await self._record(admitted)
        if fresh is None:
            return  # not acknowledged: pushed again
        for incoming, new in zip(admitted, fresh, strict=True):
            if not new:
                self.stats.duplicates += 1  # recorded before: the owner's resume finishes it if still open
            elif (key := incoming.key) is not None:
                self._work.keys.add(key)
        await push.ack()  # a connection lost meanwhile: the push comes again, recorded as seen; answered here
        for incoming, new in zip(admitted, fresh, strict=True):
            if new:
                self._spawn(self.answer(incoming), self._work.answers, "answer")

    async def answer(self, incoming: Incoming) -> None:
        """One event: apply it, decide, send the reply (claimed durably by `decide`), log the outcome."""
        event = incoming.event
        try:
            async with self._limits.messages, self._slots:
                if self.steps.apply is not None:
                    await self.steps.apply(incoming)
                if incoming.expired:
                    self.stats.expired += 1
                    return
                reply = await self.steps.decide(incoming)
                if reply is not None and isinstance(event, BuyerMessage):
                    await self.send(event.chat_id, event.sender_id, reply, in_reply_to=incoming.key)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._log.exception("answering a message failed", key=incoming.key)
        finally:
            if (key := incoming.key) is not None:
                self._work.keys.discard(key)

    # --- steps ----------------------------------------------------------------------------------------------

    def _admit(self, push: Push) -> list[Incoming]:
        admitted = []
        for event in push.events:
            incoming = self.admission.admit(event, now_ms=push.received_ms)
            if incoming is None:
                self.stats.duplicates += 1
            else:
                admitted.append(incoming)
        return admitted

    async def _record(self, admitted: list[Incoming]) -> Sequence[bool] | None:
        """Per item whether it is new; None when the record failed and the push must not be acknowledged."""
        if self.steps.record is None or not admitted:
            return [True] * len(admitted)
        try:
            return await self.steps.record(admitted)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.stats.unrecorded += 1
            reason = "the owner refused it" if isinstance(exc, NotRecorded) else "recording it failed"
            self._log.warning("push not acknowledged: it comes again", reason=reason, error=str(exc)[:200])
            return None

    # --- plumbing -------------------------------------------------------------------------------------------

    async def _drain(self, seconds: float) -> None:
        """Wait until no answer is in hand, the connection is gone, or `seconds` passed."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (busy := {t for t in (*self._work.takes, *self._work.answers) if not t.done()}) and (
            self.session.connected
        ):
            left = until - loop.time()
            if left <= 0:
                self._log.warning("messages still in hand when the session closed", count=len(busy))
                return
            # In slices: a connection lost meanwhile ends the wait (its replies cannot go out anyway).
            await asyncio.wait(busy, timeout=min(left, 0.2))

    def _spawn(self, coro: Awaitable[Any], into: set[asyncio.Task[None]], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(f"{self.session.account_id}:{name}")
        into.add(task)
        task.add_done_callback(into.discard)


__all__ = ["AccountPipeline", "Decide", "Incoming", "PipelineStats", "Record", "Steps"]
