"""AccountReplier: what one account answers, from the pure policy to the pipeline's `decide` step.

The pipeline hands over each event it admitted and recorded (not a duplicate, with its expiry and echo flags).
The replier runs `replies.policy.decide`, applies the decision's state changes before any `await` (so concurrent
messages of one chat see each other), waits out a debounce, asks the AI when the policy says so (falling back to
the default reply on any AI failure), reports every decision to `on_decision` for the conversation log, and
returns the reply for the pipeline to send once `claim_reply` (the durable compare-and-set of the message's row)
allowed it: of two handlers of one message, a live one and a resumed one, only one sends. Rules and settings are
swapped whole by `update`: the next message sees the new ones, no restart needed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from ..platform.ai import AIReplier
from ..platform.values import Reply
from ..protocol import BuyerMessage, now_ms
from ..replies import (
    Action,
    AIReplyError,
    ChatFacts,
    Decision,
    PauseChat,
    Reason,
    ReplyKind,
    ReplySettings,
    ReplyState,
    RuleIndex,
    Turn,
    decide,
    resolve_wait,
)
from ..replies.admission import Incoming

log = structlog.get_logger("xianyu_autoreply.replier")

History = Callable[[str], Awaitable[Sequence[Turn]]]
Facts = Callable[[BuyerMessage], Awaitable[ChatFacts]]
AIFactory = Callable[[ReplySettings], AIReplier]


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision as the conversation log records it, with the text actually chosen for sending."""

    incoming: Incoming
    decision: Decision
    reply: Reply | None
    error: str | None = None


def _default_ai(settings: ReplySettings) -> AIReplier:
    return AIReplier(settings.ai, account_name=settings.account_name)


class AccountReplier:
    """The replies of one account; `decide` is its pipeline's step."""

    def __init__(
        self,
        *,
        account_id: str,
        rules: RuleIndex | None = None,
        settings: ReplySettings | None = None,
        history: History | None = None,
        facts: Facts | None = None,
        on_decision: Callable[[Decided], Awaitable[None]] | None = None,
        claim_reply: Callable[[Decided], Awaitable[bool]] | None = None,
        ai_factory: AIFactory = _default_ai,
    ) -> None:
        self.account_id = account_id
        self.rules = rules or RuleIndex.build([])
        self.settings = settings or ReplySettings()
        # No message-id memory: admission and the store's unique key drop every duplicate before `decide`.
        self.state = ReplyState()
        self._history = history
        self._facts = facts
        self._on_decision = on_decision
        self._claim_reply = claim_reply
        self._ai_factory = ai_factory
        self._ai: AIReplier | None = None
        self._log = log.bind(account_id=account_id)

    def update(self, *, rules: RuleIndex | None = None, settings: ReplySettings | None = None) -> None:
        """Swap rules and/or settings; applies to the next message."""
        if rules is not None:
            self.rules = rules
        if settings is not None:
            if self._ai is not None and settings.ai != self.settings.ai:
                ai, self._ai = self._ai, None
                asyncio.get_running_loop().create_task(ai.aclose())
            self.settings = settings

    def pause_chat(self, chat_id: str, *, minutes: float | None = None) -> None:
        """The seller answered by hand through us: pause auto-replies in that chat (manual takeover)."""
        pause = self.settings.pause_minutes if minutes is None else minutes
        if pause > 0:
            now = now_ms()
            self.state.apply((PauseChat(chat_id, now + int(pause * 60_000)),), now_ms=now)

    async def aclose(self) -> None:
        if self._ai is not None:
            ai, self._ai = self._ai, None
            await ai.aclose()

    async def decide(self, incoming: Incoming) -> Reply | None:
        event = incoming.event
        facts = await self._chat_facts(event) if isinstance(event, BuyerMessage) else None
        now = now_ms()
        decision = decide(incoming, state=self.state, settings=self.settings, now_ms=now, rules=self.rules, facts=facts)
        self.state.apply(decision.changes, now_ms=now)
        if decision.action is Action.WAIT and isinstance(event, BuyerMessage):
            await asyncio.sleep(max(0.0, ((decision.wait_until_ms or now) - now_ms()) / 1000))
            now = now_ms()
            decision = resolve_wait(
                event, state=self.state, settings=self.settings, now_ms=now, rules=self.rules, facts=facts
            )
            self.state.apply(decision.changes, now_ms=now)
        if decision.action is Action.ASK_AI and decision.ai_query is not None:
            return await self._ask_ai(incoming, decision)
        if decision.action is Action.REPLY and decision.reply is not None:
            return await self._done(incoming, decision, _reply(decision))
        return await self._done(incoming, decision)

    async def _ask_ai(self, incoming: Incoming, decision: Decision) -> Reply | None:
        assert decision.ai_query is not None
        try:
            if self._ai is None:
                self._ai = self._ai_factory(self.settings)
            history = await self._history(decision.ai_query.chat_id) if self._history else ()
            answer = await self._ai.reply(decision.ai_query, history=history)
        except AIReplyError as exc:
            self._log.warning("AI reply failed; using the fallback", error=str(exc))
            fallback = decision.fallback or Decision(Action.NONE, Reason.AI_FAILED)
            self.state.apply(fallback.changes, now_ms=now_ms())
            reply = _reply(fallback) if fallback.action is Action.REPLY else None
            return await self._done(incoming, fallback, reply, error=str(exc))
        source = "ai" if answer.blocked is None else f"ai:blocked:{answer.blocked}"
        return await self._done(incoming, decision, Reply(text=answer.text, source=source))

    async def _chat_facts(self, event: BuyerMessage) -> ChatFacts | None:
        if self._facts is None or not event.item_id:
            return None
        try:
            return await self._facts(event)
        except Exception as exc:
            self._log.warning("item facts unavailable", item_id=event.item_id, error=str(exc))
            return None

    async def _done(
        self, incoming: Incoming, decision: Decision, reply: Reply | None = None, *, error: str | None = None
    ) -> Reply | None:
        decided = Decided(incoming, decision, reply, error)
        if reply is not None and self._claim_reply is not None:
            try:
                claimed = await self._claim_reply(decided)
            except Exception as exc:
                # Not known to be ours: not sent. The message stays recorded and open for a later resume.
                self._log.warning("reply not claimed; not sent", error=f"{type(exc).__name__}: {exc}"[:200])
                return None
            if not claimed:
                self._log.info("message answered by another handler; not sent again")
                return None
        if self._on_decision is not None:
            try:
                await self._on_decision(decided)
            except Exception:
                self._log.exception("recording a decision failed")
        return reply


def _reply(decision: Decision) -> Reply | None:
    out = decision.reply
    if out is None:
        return None
    if out.kind is ReplyKind.IMAGE:
        return Reply(image_url=out.text, source=decision.source)
    return Reply(text=out.text, source=decision.source)
