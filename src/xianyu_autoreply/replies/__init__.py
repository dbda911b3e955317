"""Reply decisions, pure: keyword rules, templates, the reply policy, AI prompts and the bargaining guard.

Everything here takes data in and hands decisions out, with no I/O: the AI is asked by `platform/ai.py`, which
builds its prompt and judges its answer with the functions here. See `policy.py` for the order in which a buyer's
message is judged.
"""

from .admission import IMAGE_ECHO_TEXT, Admission, Incoming, event_key, message_key
from .ai import AIAnswer, AIEmptyAnswer, AIReplyError, AIRequestFailed, AITimeout, accept_answer
from .bargain import (
    SAFE_PLATFORM_TEXT,
    SAFE_PRICE_REFUSAL,
    GuardedAnswer,
    GuardVerdict,
    Offer,
    OfferKind,
    check_offers,
    find_off_platform,
    find_offers,
    guard_answer,
    is_bargaining,
    lowest_price,
    parse_number,
)
from .memory import SeenMessages, SentText, SentTexts
from .policy import (
    Action,
    AwaitDebounce,
    Change,
    ClearDebounce,
    CountBargainRound,
    Decision,
    MarkDefaultSent,
    OutgoingReply,
    PauseChat,
    Reason,
    ReplyState,
    decide,
    resolve_wait,
)
from .prompt import AIQuery, ChatFacts, Turn, build_messages, system_prompt
from .rules import MatchKind, ReplyKind, Rule, RuleError, RuleIndex, normalise, validate_rule
from .settings import AISettings, ReplySettings
from .templates import VARIABLES, TemplateError, TemplateValues, render, validate_template
from .try_it import TryResult, try_reply

__all__ = [
    "IMAGE_ECHO_TEXT",
    "SAFE_PLATFORM_TEXT",
    "SAFE_PRICE_REFUSAL",
    "VARIABLES",
    "AIAnswer",
    "AIEmptyAnswer",
    "AIQuery",
    "AIReplyError",
    "AIRequestFailed",
    "AISettings",
    "AITimeout",
    "Action",
    "Admission",
    "AwaitDebounce",
    "Change",
    "ChatFacts",
    "ClearDebounce",
    "CountBargainRound",
    "Decision",
    "GuardVerdict",
    "GuardedAnswer",
    "Incoming",
    "MarkDefaultSent",
    "MatchKind",
    "Offer",
    "OfferKind",
    "OutgoingReply",
    "PauseChat",
    "Reason",
    "ReplyKind",
    "ReplySettings",
    "ReplyState",
    "Rule",
    "RuleError",
    "RuleIndex",
    "SeenMessages",
    "SentText",
    "SentTexts",
    "TemplateError",
    "TemplateValues",
    "TryResult",
    "Turn",
    "accept_answer",
    "build_messages",
    "check_offers",
    "decide",
    "event_key",
    "find_off_platform",
    "find_offers",
    "guard_answer",
    "is_bargaining",
    "lowest_price",
    "message_key",
    "normalise",
    "parse_number",
    "render",
    "resolve_wait",
    "system_prompt",
    "try_reply",
    "validate_rule",
    "validate_template",
]
