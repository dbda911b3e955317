"""How one account's parts are built from the engine's shared ones: its replier, its steps, session and pipeline.

The scheduler decides when (supervision, locks, lifecycle); `AccountWiring` knows what goes into each part: the
store-backed steps, the replier's history and item facts, the reply settings composed from what the store holds,
and the session's own callbacks (a refreshed cookie persisted, a verification demand published).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import structlog

from ..config import Settings
from ..outbound import OutboundGuard
from ..platform.ai import AIReplier
from ..platform.limits import ProcessLimits
from ..platform.mtop_client import MtopApi
from ..platform.session import AccountSession, ReconnectPolicy
from ..platform.values import StateChange
from ..protocol import BuyerMessage
from ..replies import ChatFacts, ReplySettings, RuleIndex, Turn
from ..store import Direction, Store
from ..store.accounts import ReplyConfig
from ..store.cluster import Fence
from .account import AccountRuntime
from .events import EventBus, VerificationRequired
from .orders import OrderDesk
from .pipeline import AccountPipeline, Steps
from .replier import AccountReplier
from .steps import AccountSteps

log = structlog.get_logger("xianyu_autoreply.engine")

ITEM_FACTS_KEPT = 256  # per account: item titles and prices the replier asked the platform for


class AccountWiring:
    """Builds the parts of one account; every part gets only what it uses."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        mtop: MtopApi,
        bus: EventBus,
        orders: OrderDesk,
        outbound: OutboundGuard,
        policy: ReconnectPolicy,
        ai_timeout: float,
        fence_for: Callable[[str], Fence | None],
    ) -> None:
        self._store = store
        self._settings = settings
        self._mtop = mtop
        self._bus = bus
        self._orders = orders
        self._outbound = outbound
        self._policy = policy
        self._ai_timeout = ai_timeout
        self._fence_for = fence_for

    async def replier(self, rt: AccountRuntime, preloaded: ReplyConfig | None) -> AccountReplier:
        """The account's replier (and its steps), from a bulk-read config or from the store."""
        account_id = rt.account_id
        steps = rt.steps = AccountSteps(
            account_id,
            store=self._store,
            bus=self._bus,
            orders=self._orders,
            fence=lambda: self._fence_for(account_id),
            expire_ms=int(self._settings.session.message_expire * 1000),
        )

        async def history(chat_id: str) -> list[Turn]:
            await self._store.log_writer.flush()  # the AI must see the replies still queued for the log
            messages = await self._store.list_messages(account_id, chat_id=chat_id, limit=21)
            seller = rt.session.seller_id if rt.session is not None else None
            turns = [
                Turn(m.text, from_buyer=m.direction is Direction.IN and m.sender_id != seller)
                for m in messages
                if m.text
            ]
            return turns[:-1]  # the current message is the query itself

        async def facts(event: BuyerMessage) -> ChatFacts:
            item_id = event.item_id or ""
            cached = rt.items.get(item_id)
            if cached is not None:
                return cached
            session = rt.session
            if session is None:
                return ChatFacts()
            detail = await self._mtop.item_detail(session.cookie_jar, item_id=item_id, proxy=rt.proxy)
            fact = ChatFacts(item_title=detail.title or None, item_price=_price(detail.price))
            rt.items[item_id] = fact
            while len(rt.items) > ITEM_FACTS_KEPT:
                rt.items.popitem(last=False)
            return fact

        if preloaded is not None:
            rules, settings = RuleIndex.build(preloaded.rules), self.compose_settings(preloaded)
        else:
            rules, settings = await self.rules(account_id), await self.reply_settings(account_id)
        return AccountReplier(
            account_id=account_id,
            rules=rules,
            settings=settings,
            history=history,
            facts=facts,
            on_decision=steps.decided,
            claim_reply=steps.claim,
            ai_factory=self.ai,
        )

    def ai(self, settings: ReplySettings) -> AIReplier:
        return AIReplier(
            settings.ai, account_name=settings.account_name, timeout_s=self._ai_timeout, outbound=self._outbound
        )

    def pipeline(
        self, rt: AccountRuntime, *, limits: ProcessLimits | None, on_state: Callable[[StateChange], None]
    ) -> AccountPipeline:
        """A new session for the account, read by a new pipeline over the account's replier and steps."""
        account_id, replier, steps = rt.account_id, rt.replier, rt.steps
        assert replier is not None and steps is not None

        async def on_cookie(cookie: str) -> None:
            # The platform refreshed a cookie value: keep it, so a restart logs in with the fresh one.
            try:
                account = await self._store.update_cookie(
                    account_id, cookie, actor="session", fence=self._fence_for(account_id)
                )
            except Exception as exc:
                log.warning("could not save a refreshed cookie", account_id=account_id, error=type(exc).__name__)
                return
            rt.cookie, rt.version = cookie, account.version

        async def on_verification(url: str | None) -> None:
            rt.last_error = "verification_required"
            self._bus.publish(VerificationRequired(account_id=account_id, url=url))

        session = AccountSession(
            account_id=account_id,
            cookie=rt.cookie,
            ws_url=self._settings.platform.ws_url,
            mtop=self._mtop,
            settings=self._settings.session,
            proxy=rt.proxy,
            limits=limits,
            policy=self._policy,
            outbound=self._outbound,
            on_state=on_state,
            on_cookie=on_cookie,
            on_verification=on_verification,
        )
        steps_of = Steps(decide=replier.decide, record=steps.record, apply=steps.apply, log=steps.log)
        return AccountPipeline(session, steps_of, limits=limits)

    async def rules(self, account_id: str) -> RuleIndex:
        return RuleIndex.build(await self._store.get_rules(account_id))

    async def reply_settings(self, account_id: str) -> ReplySettings:
        settings = await self._store.get_settings(account_id)
        ai = await self._store.get_ai_settings(account_id)
        key = await self._store.get_ai_api_key(account_id) if ai.has_api_key else None
        account = await self._store.get_account(account_id)
        config = ReplyConfig(
            account_id=account_id,
            version=account.version,
            remark=account.remark,
            rules=[],
            settings=settings,
            ai=ai,
            ai_api_key=key,
        )
        return self.compose_settings(config)

    def compose_settings(self, config: ReplyConfig) -> ReplySettings:
        """The replier's settings from what the store holds for the account."""
        return config.reply_settings(message_expire_seconds=self._settings.session.message_expire)


def _price(value: str | None) -> Decimal | None:
    if not value:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None
