"""Reply templates: `{variable}` placeholders filled in when a reply is sent.

The variables are those of `VARIABLES`; `{send_user_name}` is the seeds' name for the buyer's nickname and stays as
an alias of `{buyer_name}`. `{{` and `}}` stand for literal braces. A template is checked when it is saved
(`validate_template`), so that a typo such as `{buyer}` is refused there with its position instead of reaching a
buyer as raw braces; `render` then never fails on it, and a value we do not know renders as an empty string.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .errors import TemplateError as TemplateError  # noqa: PLC0414 (explicit re-export: callers import it from here)

VARIABLES = frozenset({"buyer_name", "send_user_name", "item_id", "item_title", "order_id", "account_name"})
MAX_TEMPLATE_CHARS = 2000


@dataclass(frozen=True, slots=True)
class TemplateValues:
    """The values a template can use; None (unknown) renders as an empty string."""

    buyer_name: str | None = None
    item_id: str | None = None
    item_title: str | None = None
    order_id: str | None = None
    account_name: str | None = None

    def get(self, name: str) -> str:
        """The value of one variable of `VARIABLES`, `send_user_name` being the buyer's name."""
        if name == "send_user_name":
            name = "buyer_name"
        value = getattr(self, name)
        return value if value is not None else ""


@dataclass(frozen=True, slots=True)
class _Var:
    name: str


_Segment = str | _Var


def validate_template(text: str) -> None:
    """Refuse (TemplateError) a template with an unknown variable, a stray brace, or too long to send."""
    _parse(text)


def render(text: str, values: TemplateValues) -> str:
    """Fill in the variables of a template; raises TemplateError only for a template `validate_template` refuses."""
    return "".join(part if isinstance(part, str) else values.get(part.name) for part in _parse(text))


_TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]")


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[_Segment, ...]:
    # Cached: an account sends the same few templates over and over.
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the text is {len(text)} characters long, more than {MAX_TEMPLATE_CHARS}")
    segments: list[_Segment] = []
    literal: list[str] = []
    position = 0
    for token in _TOKEN.finditer(text):
        literal.append(text[position : token.start()])
        position = token.end()
        found = token.group()
        if found in ("{{", "}}"):
            literal.append(found[0])
        elif found == "{":
            raise TemplateError(f"'{{' at position {token.start()} is not closed (write '{{{{' for a literal brace)")
        elif found == "}":
            raise TemplateError(
                f"'}}' at position {token.start()} has no opening brace (write '}}}}' for a literal brace)"
            )
        else:
            name = found[1:-1]
            if name not in VARIABLES:
                known = ", ".join(f"{{{v}}}" for v in sorted(VARIABLES))
                raise TemplateError(f"unknown variable {found} at position {token.start()}; known: {known}")
            if any(literal):
                segments.append("".join(literal))
            literal.clear()
            segments.append(_Var(name))
    literal.append(text[position:])
    if any(literal):
        segments.append("".join(literal))
    return tuple(segments)
