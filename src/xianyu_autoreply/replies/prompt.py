"""What an AI reply is asked with: the query the policy hands out, and the chat messages built from it.

Pure: the session gathers the chat history and the item facts it has, and `build_messages` turns them into the
OpenAI chat format. The system prompt states the platform rules and the price floor so that the model usually
stays inside them; the bargaining guard (`bargain.py`) enforces them whatever the model says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from .bargain import lowest_price
from .settings import AISettings

MAX_HISTORY_TURNS = 20


@dataclass(frozen=True, slots=True)
class Turn:
    """One earlier message of the chat, oldest first in a history: from the buyer, or from the seller/us."""

    text: str
    from_buyer: bool


@dataclass(frozen=True, slots=True)
class ChatFacts:
    """What the session already knows about a chat without asking anyone (cached item details, last order)."""

    item_title: str | None = None
    item_price: Decimal | None = None
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class AIQuery:
    """An AI reply to ask for: the buyer's message and what the prompt says about it."""

    chat_id: str
    buyer_text: str
    buyer_name: str
    item_id: str | None
    facts: ChatFacts = field(default_factory=ChatFacts)
    # Haggling messages of the buyer in this chat so far, this one included: past `max_bargain_rounds` the
    # guard lets no concession through.
    bargain_round: int = 0


def system_prompt(query: AIQuery, *, settings: AISettings, account_name: str = "") -> str:
    """The system message: role, platform rules, item facts, price limits and the seller's own instructions."""
    seller = f"「{account_name}」" if account_name else ""
    lines = [
        f"你是闲鱼卖家{seller}的客服，替卖家回复买家的消息。",
        "要求：用简体中文，简短、礼貌、口语化，一般不超过80字；不知道的信息不要编造。",
        "只在闲鱼平台内沟通和交易：不要提供或索要微信、QQ、支付宝、银行卡、电话号码，不要约线下交易。",
    ]
    facts = query.facts
    if facts.item_title:
        lines.append(f"商品：{facts.item_title}")
    if facts.item_price is not None:
        floor = lowest_price(facts.item_price, settings=settings)
        lines.append(f"标价：{_money(facts.item_price)}元")
        lines.append(
            f"议价：不要主动降价；买家还价时可以少量让价，但成交价不得低于{_money(floor)}元"
            f"（最多便宜{_money(Decimal(str(settings.max_discount_percent)))}%，"
            f"且最多便宜{_money(Decimal(str(settings.max_discount_amount)))}元）。"
        )
    else:
        lines.append("议价：不知道标价，不要报任何价格或折扣，请买家以商品页面标价为准。")
    if query.bargain_round:
        lines.append(
            f"买家在这次对话中已还价{query.bargain_round}次（含这条消息），最多让价{settings.max_bargain_rounds}次；"
            "超过后礼貌拒绝，不再让价。"
        )
    if settings.prompt.strip():
        lines.append("卖家的补充说明：")
        lines.append(settings.prompt.strip())
    return "\n".join(lines)


def build_messages(
    query: AIQuery,
    *,
    history: Sequence[Turn],
    settings: AISettings,
    account_name: str = "",
    max_turns: int = MAX_HISTORY_TURNS,
) -> list[dict[str, str]]:
    """Chat messages for the model: the system prompt, the last `max_turns` of `history`, then the buyer's message.

    `history` is the chat before this message; buyer turns become `user`, the seller's and ours `assistant`.
    """
    messages = [{"role": "system", "content": system_prompt(query, settings=settings, account_name=account_name)}]
    recent = history[-max_turns:] if max_turns > 0 else ()
    messages.extend(
        {"role": "user" if turn.from_buyer else "assistant", "content": turn.text} for turn in recent if turn.text
    )
    messages.append({"role": "user", "content": query.buyer_text})
    return messages


def _money(value: Decimal) -> str:
    # 80 rather than 80.00, 79.5 rather than 79.50.
    text = f"{value.quantize(Decimal('0.01')):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
