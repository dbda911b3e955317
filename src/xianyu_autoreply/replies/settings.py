"""An account's reply settings, as the policy and the AI client read them (REST `/accounts/{id}/settings`).

Frozen plain data: the store or the API builds one from the saved settings and hands it over whole, so a change of
settings is a new object and never half-applied to a message in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AISettings:
    """AI replies of one account; the discount limits bound what the bargaining guard lets through.

    A limit of 0 allows no discount of that kind; both limits hold at once (the stricter one wins).
    """

    enabled: bool = False
    base_url: str | None = None
    model: str = ""
    api_key: str = field(default="", repr=False)
    max_discount_percent: float = 10
    max_discount_amount: float = 100
    max_bargain_rounds: int = 3
    prompt: str = ""


@dataclass(frozen=True, slots=True)
class ReplySettings:
    """How one account answers its buyers (see DESIGN §2 for the matching API fields)."""

    default_reply: str = ""
    default_reply_once_per_chat: bool = False
    pause_minutes: float = 10
    debounce_seconds: float = 0
    message_expire_seconds: float = 300
    account_name: str = ""
    ai: AISettings = field(default_factory=AISettings)
