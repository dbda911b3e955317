from dataclasses import replace
from decimal import Decimal

import pytest

from xianyu_autoreply.protocol.events import OrderEvent, OrderStatus, SystemNotice, Typing, UnknownPayload
from xianyu_autoreply.replies import policy
from xianyu_autoreply.replies.admission import Admission, Incoming
from xianyu_autoreply.replies.policy import (
    Action,
    Decision,
    OutgoingReply,
    Reason,
    ReplyState,
    decide,
    resolve_wait,
)
from xianyu_autoreply.replies.prompt import ChatFacts
from xianyu_autoreply.replies.rules import MatchKind, ReplyKind, Rule, RuleIndex
from xianyu_autoreply.replies.settings import AISettings, ReplySettings

from .reply_factories import NOW, buyer, seller

RULES = RuleIndex.build(
    [
        Rule("价格", "{buyer_name}你好，{item_title}一口价", id="price"),
        Rule("价格", "这件{item_id}不议价", item_id="special", id="item_price"),
        Rule("实拍", "https://img.example/p.jpg", kind=ReplyKind.IMAGE, id="photo"),
        Rule("在吗", "在的", match=MatchKind.EXACT, id="hello"),
    ]
)
SETTINGS = ReplySettings(default_reply="亲，稍等我看下～", pause_minutes=10)
AI_SETTINGS = replace(SETTINGS, ai=AISettings(enabled=True, model="m", max_bargain_rounds=2))


class Account:
    """One account driven the way its pipeline drives it: admit (dropping duplicates), decide, apply at once."""

    def __init__(
        self, settings: ReplySettings = SETTINGS, rules: RuleIndex = RULES, *, remember_ids: bool = True
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.state = ReplyState()
        expire_ms = int(settings.message_expire_seconds * 1000)
        self.admission = Admission(expire_ms=expire_ms, remember_ids=remember_ids)

    def receive(self, event: object, *, at: int = NOW, facts: ChatFacts | None = None) -> Decision:
        incoming = self.admission.admit(event, now_ms=at)  # type: ignore[arg-type]
        if incoming is None:
            return Decision(Action.NONE, Reason.DUPLICATE)  # the pipeline drops it before deciding
        decision = decide(
            incoming,
            state=self.state,
            settings=self.settings,
            now_ms=at,
            rules=self.rules,
            facts=facts,
        )
        self.state.apply(decision.changes, now_ms=at)
        return decision

    def wake(self, event: object, *, at: int) -> Decision:
        decision = resolve_wait(
            event,  # type: ignore[arg-type]
            state=self.state,
            settings=self.settings,
            now_ms=at,
            rules=self.rules,
        )
        self.state.apply(decision.changes, now_ms=at)
        return decision

    def sent(self, chat_id: str, text: str | None, *, at: int = NOW, uuid: str = "u-1") -> None:
        self.admission.sending(chat_id, text=text, uuid=uuid, now_ms=at)


def replied(decision: Decision) -> str | None:
    return decision.reply.text if decision.action is Action.REPLY and decision.reply else None


# --- not answered at all -----------------------------------------------------------------------------------


def test_order_event_gets_no_reply() -> None:
    event = OrderEvent("9001", OrderStatus.PAID, "c1", "b1", "item1", "[我已付款，等待你发货]", "m1", NOW)
    decision = Account().receive(event)
    assert (decision.action, decision.reason, decision.source) == (Action.NONE, Reason.SYSTEM_MESSAGE, "none")


def test_system_notice_gets_no_reply() -> None:
    decision = Account().receive(SystemNotice("发来一条新消息", "c1", "m1", NOW))
    assert decision.reason is Reason.SYSTEM_MESSAGE


@pytest.mark.parametrize(
    "text",
    ["[我已拍下，待付款]", "[不想宝贝被砍价?设置不砍价回复  ]", "快给ta一个评价吧～", "[你已发货]", " 发来一条消息 "],
)
def test_platform_text_in_a_chat_message_gets_no_reply(text: str) -> None:
    decision = Account().receive(buyer(text))
    assert (decision.action, decision.reason) == (Action.NONE, Reason.SYSTEM_MESSAGE)


@pytest.mark.parametrize("event", [Typing("b1", "c1"), UnknownPayload("odd")])
def test_typing_and_unknown_payloads_are_not_messages(event: object) -> None:
    assert Account().receive(event).reason is Reason.NOT_A_MESSAGE


def test_expired_message_is_recorded_not_answered() -> None:
    account = Account()
    old = buyer("价格", created_ms=NOW - 301_000)
    decision = account.receive(old)
    assert (decision.action, decision.reason) == (Action.NONE, Reason.EXPIRED)
    assert account.admission.seen.contains(old.message_id, now_ms=NOW)


def test_message_just_inside_the_expiry_window_is_answered() -> None:
    assert Account().receive(buyer("在吗", created_ms=NOW - 300_000)).action is Action.REPLY


def test_duplicate_message_id_gets_no_second_reply() -> None:
    account = Account()
    message = buyer("在吗", message_id="same")
    assert replied(account.receive(message)) == "在的"
    again = account.receive(message, at=NOW + 5_000)
    assert (again.action, again.reason) == (Action.NONE, Reason.DUPLICATE)


def test_same_text_twice_gets_two_replies() -> None:
    account = Account()
    assert replied(account.receive(buyer("在吗"))) == "在的"
    assert replied(account.receive(buyer("在吗"), at=NOW + 1_000)) == "在的"


def test_message_without_id_is_deduplicated_by_chat_time_and_text() -> None:
    account = Account()
    assert account.receive(buyer("在吗", message_id="")).action is Action.REPLY
    assert account.receive(buyer("在吗", message_id="")).reason is Reason.DUPLICATE
    assert account.receive(buyer("在吗", message_id="", created_ms=NOW + 1)).action is Action.REPLY


# --- own echoes and manual takeover -------------------------------------------------------------------------


def test_own_echo_does_not_pause_chat() -> None:
    account = Account()
    assert replied(account.receive(buyer("在吗"))) == "在的"
    account.sent("c1", "在的")
    echo = account.receive(seller("在的"), at=NOW + 500)
    assert (echo.action, echo.reason, echo.paused_until_ms) == (Action.NONE, Reason.OWN_ECHO, None)
    assert replied(account.receive(buyer("在吗"), at=NOW + 1_000)) == "在的"


def test_own_echo_is_recognised_by_message_id() -> None:
    account = Account()
    account.sent("c1", "在的", uuid="-17000000000001")
    assert account.receive(seller("[图片]", message_id="-17000000000001")).reason is Reason.OWN_ECHO


def test_image_reply_echo_is_recognised() -> None:
    account = Account()
    decision = account.receive(buyer("有实拍吗"))
    assert decision.reply == OutgoingReply("https://img.example/p.jpg", ReplyKind.IMAGE)
    account.sent("c1", None)  # an image: its echo reads "[图片]"
    assert account.receive(seller("[图片]")).reason is Reason.OWN_ECHO


def test_seller_typing_elsewhere_pauses_chat() -> None:
    account = Account()
    takeover = account.receive(seller("我来回答你"))
    assert (takeover.action, takeover.reason) == (Action.NONE, Reason.MANUAL_TAKEOVER)
    assert takeover.paused_until_ms == NOW + 10 * 60_000
    paused = account.receive(buyer("在吗"), at=NOW + 1_000)
    assert (paused.action, paused.reason) == (Action.NONE, Reason.PAUSED)


def test_seller_retyping_the_bots_text_is_still_a_takeover() -> None:
    account = Account()
    account.sent("c1", "在的")
    assert account.receive(seller("在的")).reason is Reason.OWN_ECHO
    assert account.receive(seller("在的")).reason is Reason.MANUAL_TAKEOVER


def test_pause_ends_after_pause_minutes() -> None:
    account = Account()
    account.receive(seller("我来"))
    assert account.receive(buyer("在吗", created_ms=NOW + 599_999), at=NOW + 599_999).reason is Reason.PAUSED
    resumed = account.receive(buyer("在吗", created_ms=NOW + 600_000), at=NOW + 600_000)
    assert replied(resumed) == "在的"


def test_takeover_again_extends_the_pause() -> None:
    account = Account()
    account.receive(seller("我来"))
    account.receive(seller("还是我", created_ms=NOW + 300_000), at=NOW + 300_000)
    later = NOW + 700_000
    assert account.receive(buyer("在吗", created_ms=later), at=later).reason is Reason.PAUSED


def test_pause_minutes_zero_never_pauses() -> None:
    account = Account(replace(SETTINGS, pause_minutes=0))
    takeover = account.receive(seller("我来"))
    assert (takeover.reason, takeover.paused_until_ms) == (Reason.MANUAL_TAKEOVER, None)
    assert replied(account.receive(buyer("在吗"), at=NOW + 1)) == "在的"


def test_takeover_pauses_only_its_own_chat() -> None:
    account = Account()
    account.receive(seller("我来", chat_id="c1"))
    assert replied(account.receive(buyer("在吗", chat_id="c2"))) == "在的"


def test_expired_seller_message_does_not_pause() -> None:
    account = Account()
    assert account.receive(seller("旧消息", created_ms=NOW - 400_000)).reason is Reason.EXPIRED
    assert account.receive(buyer("在吗")).action is Action.REPLY


# --- debounce ------------------------------------------------------------------------------------------------


def test_debounce_answers_only_the_last_message_of_a_burst() -> None:
    account = Account(replace(SETTINGS, debounce_seconds=3))
    first, second = buyer("你好"), buyer("在吗", created_ms=NOW + 1_000)
    wait_1 = account.receive(first)
    wait_2 = account.receive(second, at=NOW + 1_000)
    assert (wait_1.action, wait_1.reason, wait_1.wait_until_ms) == (Action.WAIT, Reason.DEBOUNCE_WAIT, NOW + 3_000)
    assert wait_2.wait_until_ms == NOW + 4_000
    superseded = account.wake(first, at=NOW + 3_000)
    assert (superseded.action, superseded.reason) == (Action.NONE, Reason.DEBOUNCED)
    assert replied(account.wake(second, at=NOW + 4_000)) == "在的"


def test_debounce_is_per_chat() -> None:
    account = Account(replace(SETTINGS, debounce_seconds=3))
    one, other = buyer("在吗", chat_id="c1"), buyer("在吗", chat_id="c2")
    account.receive(one)
    account.receive(other)
    assert replied(account.wake(one, at=NOW + 3_000)) == "在的"
    assert replied(account.wake(other, at=NOW + 3_000)) == "在的"


def test_debounced_message_is_answered_once() -> None:
    account = Account(replace(SETTINGS, debounce_seconds=3))
    message = buyer("在吗")
    account.receive(message)
    assert account.wake(message, at=NOW + 3_000).action is Action.REPLY
    assert account.wake(message, at=NOW + 3_001).reason is Reason.DEBOUNCED


def test_takeover_during_debounce_wait_cancels_the_answer() -> None:
    account = Account(replace(SETTINGS, debounce_seconds=3))
    message = buyer("在吗")
    account.receive(message)
    account.receive(seller("我来", created_ms=NOW + 1_000), at=NOW + 1_000)
    assert account.wake(message, at=NOW + 3_000).reason is Reason.PAUSED


def test_duplicate_during_debounce_wait_does_not_restart_it() -> None:
    account = Account(replace(SETTINGS, debounce_seconds=3))
    message = buyer("在吗")
    account.receive(message)
    assert account.receive(message, at=NOW + 1_000).reason is Reason.DUPLICATE
    assert account.wake(message, at=NOW + 3_000).action is Action.REPLY


# --- rule -> AI -> default -----------------------------------------------------------------------------------


def test_rule_reply_fills_in_template_variables() -> None:
    decision = Account().receive(buyer("价格多少", nick="阿明"), facts=ChatFacts(item_title="相机"))
    assert (replied(decision), decision.source, decision.reason) == (
        "阿明你好，相机一口价",
        "rule:price",
        "rule_matched",
    )


def test_item_rule_answers_for_its_item() -> None:
    decision = Account().receive(buyer("价格多少", item_id="special"))
    assert (replied(decision), decision.source) == ("这件special不议价", "rule:item_price")


def test_image_rule_replies_with_the_image() -> None:
    decision = Account().receive(buyer("有实拍吗"))
    assert decision.reply == OutgoingReply("https://img.example/p.jpg", ReplyKind.IMAGE)


def test_rule_rendering_to_nothing_sends_nothing() -> None:
    rules = RuleIndex.build([Rule("标题", "{item_title}", id="title")])
    decision = Account(rules=rules).receive(buyer("标题"))
    assert (decision.action, decision.reason, decision.source) == (Action.NONE, Reason.EMPTY_REPLY, "rule:title")


def test_rule_wins_over_ai() -> None:
    decision = Account(AI_SETTINGS).receive(buyer("在吗"))
    assert decision.source == "rule:hello"


def test_ai_is_asked_when_no_rule_matches() -> None:
    facts = ChatFacts(item_title="相机", item_price=Decimal(100))
    decision = Account(AI_SETTINGS).receive(buyer("成色怎么样", nick="阿明"), facts=facts)
    assert (decision.action, decision.source, decision.reason) == (Action.ASK_AI, "ai", Reason.ASK_AI)
    query = decision.ai_query
    assert query is not None
    assert (query.chat_id, query.buyer_text, query.buyer_name, query.item_id) == ("c1", "成色怎么样", "阿明", "item1")
    assert (query.facts, query.bargain_round) == (facts, 0)


def test_ai_failure_falls_back_to_the_default_reply() -> None:
    decision = Account(AI_SETTINGS).receive(buyer("成色怎么样"))
    fallback = decision.fallback
    assert fallback is not None
    assert (replied(fallback), fallback.source, fallback.reason) == ("亲，稍等我看下～", "default", Reason.AI_FAILED)


def test_ai_fallback_respects_default_once_per_chat() -> None:
    account = Account(replace(AI_SETTINGS, default_reply_once_per_chat=True))
    first = account.receive(buyer("成色怎么样"))
    assert first.fallback is not None
    account.state.apply(first.fallback.changes, now_ms=NOW)  # the AI failed: the default went out
    second = account.receive(buyer("能用多久"))
    assert second.fallback is not None
    assert (second.fallback.action, second.fallback.reason) == (Action.NONE, Reason.AI_FAILED)


def test_ai_fallback_without_default_sends_nothing() -> None:
    decision = Account(replace(AI_SETTINGS, default_reply="")).receive(buyer("成色怎么样"))
    assert decision.fallback is not None
    assert (decision.fallback.action, decision.fallback.source) == (Action.NONE, "none")


def test_haggling_counts_bargain_rounds_per_chat() -> None:
    account = Account(AI_SETTINGS)
    rounds = [account.receive(buyer(text)).ai_query.bargain_round for text in ("能便宜点吗", "成色如何", "80出吗")]  # type: ignore[union-attr]
    assert rounds == [1, 1, 2]
    assert account.receive(buyer("最低多少", chat_id="c2")).ai_query.bargain_round == 1  # type: ignore[union-attr]


def test_default_reply_when_nothing_matches() -> None:
    decision = Account().receive(buyer("成色怎么样"))
    assert (replied(decision), decision.source, decision.reason) == ("亲，稍等我看下～", "default", "default_reply")


def test_default_reply_every_time_unless_once_per_chat() -> None:
    account = Account()
    assert replied(account.receive(buyer("成色怎么样"))) is not None
    assert replied(account.receive(buyer("成色怎么样"))) is not None


def test_default_once_per_chat_is_used_once() -> None:
    account = Account(replace(SETTINGS, default_reply_once_per_chat=True))
    assert account.receive(buyer("成色怎么样")).reason is Reason.DEFAULT_REPLY
    used = account.receive(buyer("能用多久"))
    assert (used.action, used.reason) == (Action.NONE, Reason.DEFAULT_ONCE_PER_CHAT_USED)
    assert account.receive(buyer("能用多久", chat_id="c2")).reason is Reason.DEFAULT_REPLY
    assert account.receive(buyer("在吗")).source == "rule:hello"


def test_default_reply_for_every_message_keeps_no_memory_per_chat() -> None:
    # A studio answering every new chat by default must not grow a set of every chat it ever answered.
    account = Account()
    for n in range(1_000):
        assert account.receive(buyer("成色怎么样", chat_id=f"c{n}")).reason is Reason.DEFAULT_REPLY
    assert len(account.state.default_sent) == 0


def test_default_once_per_chat_forgets_the_oldest_chats_beyond_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "DEFAULT_SENT_CHATS", 3)
    account = Account(replace(SETTINGS, default_reply_once_per_chat=True))
    for chat in ("c1", "c2", "c3", "c4"):
        assert account.receive(buyer("成色怎么样", chat_id=chat)).reason is Reason.DEFAULT_REPLY
    assert len(account.state.default_sent) == 3
    assert account.receive(buyer("还在吗亲", chat_id="c4")).reason is Reason.DEFAULT_ONCE_PER_CHAT_USED
    assert account.receive(buyer("还在吗亲", chat_id="c1")).reason is Reason.DEFAULT_REPLY  # forgotten: the oldest


def test_admission_without_id_memory_leaves_duplicates_to_the_durable_record() -> None:
    # The engine's record (the store's unique key) drops duplicates before `decide`: admission keeps no ids.
    account = Account(remember_ids=False)
    message = buyer("成色怎么样")
    assert account.receive(message).reason is Reason.DEFAULT_REPLY
    assert account.receive(message).reason is Reason.DEFAULT_REPLY
    assert len(account.admission.seen) == 0
    assert Account().receive(message).reason is Reason.DEFAULT_REPLY


def test_no_rule_and_no_default_is_no_match() -> None:
    decision = Account(replace(SETTINGS, default_reply="  ")).receive(buyer("成色怎么样"))
    assert (decision.action, decision.reason, decision.source) == (Action.NONE, Reason.NO_MATCH, "none")


def test_default_reply_fills_in_variables() -> None:
    settings = replace(SETTINGS, default_reply="{buyer_name}你好，我是{account_name}", account_name="老张")
    assert replied(Account(settings).receive(buyer("嗨", nick="阿明"))) == "阿明你好，我是老张"


def test_invalid_default_template_is_never_sent() -> None:
    decision = Account(replace(SETTINGS, default_reply="你好{buyer}")).receive(buyer("嗨"))
    assert (decision.action, decision.reason) == (Action.NONE, Reason.INVALID_TEMPLATE)


# --- purity --------------------------------------------------------------------------------------------------


def test_decide_changes_no_state_by_itself() -> None:
    state = ReplyState()
    message = Incoming(buyer("在吗"), NOW)
    for _ in range(2):
        decision = decide(message, state=state, settings=SETTINGS, now_ms=NOW, rules=RULES)
        assert decision.action is Action.REPLY
    assert (state.paused_until, state.default_sent, state.debouncing) == ({}, {}, {})


def test_seen_ids_outlive_the_expiry_window() -> None:
    # Forgetting an id is safe only once a redelivery would be expired anyway.
    admission = Admission(expire_ms=int(SETTINGS.message_expire_seconds * 1000), remember_ids=True)
    assert admission.seen.ttl_ms > SETTINGS.message_expire_seconds * 1000
