"""Every input error the reply layer raises; both are `protocol.InputError`s (refused before anything is saved).

    InputError (protocol)
    ├── RuleError                 a keyword rule that cannot be saved (`rule_id`, `reason` for the seller)
    └── TemplateError             a reply template with an unknown variable or malformed braces

The AI client's failures (`AIReplyError`, ai.py) are not input errors: the policy falls back on them.
"""

from __future__ import annotations

from ..protocol.errors import InputError


class RuleError(InputError):
    """A rule that cannot be saved; `reason` is meant for the seller."""

    def __init__(self, rule_id: str | None, reason: str) -> None:
        super().__init__(f"rule {rule_id!r}: {reason}" if rule_id is not None else reason)
        self.rule_id = rule_id
        self.reason = reason


class TemplateError(InputError):
    """A template that cannot be saved: unknown variable or malformed braces; the message says where."""
