import ast
from pathlib import Path

import xianyu_autoreply.replies as replies

PUBLIC = {
    "SAFE_PLATFORM_TEXT",
    "SAFE_PRICE_REFUSAL",
    "VARIABLES",
    "AIAnswer",
    "AIEmptyAnswer",
    "AIQuery",
    "AIReplier",
    "AIReplyError",
    "AIRequestFailed",
    "AISettings",
    "AITimeout",
    "Action",
    "AwaitDebounce",
    "Change",
    "ChatFacts",
    "ClearDebounce",
    "ConsumeEcho",
    "CountBargainRound",
    "Decision",
    "GuardVerdict",
    "GuardedAnswer",
    "MarkDefaultSent",
    "MarkSeen",
    "MatchKind",
    "Offer",
    "OfferKind",
    "OutgoingReply",
    "PauseChat",
    "Reason",
    "RecordSent",
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
    "build_messages",
    "check_offers",
    "decide",
    "find_off_platform",
    "find_offers",
    "guard_answer",
    "is_bargaining",
    "lowest_price",
    "message_key",
    "normalise",
    "parse_number",
    "record_sent",
    "render",
    "resolve_wait",
    "rule_data",
    "rule_from_data",
    "system_prompt",
    "try_reply",
    "validate_rule",
    "validate_template",
}


def test_public_api_is_pinned() -> None:
    # A rename here is a deliberate act: the engine, the API and users' scripts import these names.
    assert set(replies.__all__) == PUBLIC
    assert all(hasattr(replies, name) for name in PUBLIC)


def test_only_the_ai_client_does_io() -> None:
    # DESIGN §1: replies is pure and imports only protocol; ai.py is its one I/O part.
    package = Path(replies.__file__).parent
    for module in package.glob("*.py"):
        if module.name in ("ai.py", "__init__.py"):
            continue
        imported = set()
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add("." * node.level + (node.module or ""))
        assert not imported & {"openai", "httpx", ".ai", "asyncio"}, module.name
        assert all(not name.startswith("..") or name.startswith("..protocol") for name in imported), module.name
