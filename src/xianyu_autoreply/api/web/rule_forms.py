"""The rules editor's inputs as `Rule`s (replies' one shape of a rule): the form's columns, and JSON (the export).

Pure functions, so the web handlers stay thin; a row the seller cannot have meant (no keyword, no reply, a
priority that is not a number) is refused with its number, before anything is saved.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import FormData

from ...replies import Rule, RuleError, rule_data, rule_from_data
from ...store import InvalidValue
from ..schemas import storable_text_problem

__all__ = ["displayable", "rule_json", "rules_from_form", "rules_from_json", "to_rules"]


def rule_json(rule: Rule) -> dict[str, Any]:
    """A rule as exported (and importable again)."""
    return {name: value for name, value in rule_data(rule).items() if name != "id"}


def rules_from_form(form: FormData) -> list[dict[str, Any]]:
    """The editor's rows (one list per field, a row being the same index in each), blank rows dropped."""
    fields = ("keyword", "reply", "match", "item_id", "priority", "kind")
    columns = [[str(v) for v in form.getlist(name)] for name in fields]
    width = max((len(column) for column in columns), default=0)
    rows = []
    for i in range(width):
        keyword, reply, match, item_id, priority, kind = (c[i] if i < len(c) else "" for c in columns)
        if not keyword.strip() and not reply.strip():
            continue
        rows.append(
            {
                "keyword": keyword.strip(),
                "reply": reply,
                "match": match or "contains",
                "item_id": item_id.strip() or None,
                "priority": priority.strip() or "0",
                "kind": kind or "text",
            }
        )
    return rows


def rules_from_json(text: str) -> list[dict[str, Any]]:
    """A pasted JSON list of rules, or an exported account (`{"rules": [...]}`); `JSONDecodeError` if broken."""
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("rules"), list):
        data = data["rules"]  # an exported account, or `{"rules": [...]}`
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InvalidValue("expected a JSON list of rules")
    return data


def displayable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refused rows shown back in the editor: a lone surrogate (from a JSON escape) cannot be encoded into the page,
    so it is shown as U+FFFD instead of failing the whole answer."""

    def show(value: Any) -> Any:
        if isinstance(value, str) and storable_text_problem(value) is not None:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\x00", "\ufffd")
        return value

    return [{key: show(value) for key, value in row.items()} for row in rows]


def to_rules(rows: list[dict[str, Any]]) -> list[Rule]:
    """Rows (from the form or JSON) as rules; `InvalidValue` names the first bad row."""
    rules = []
    for n, row in enumerate(rows, 1):
        for name in ("keyword", "reply", "match", "item_id", "kind"):  # imported JSON may carry "\u0000"
            value = row.get(name)
            if isinstance(value, str) and (problem := storable_text_problem(value)) is not None:
                raise InvalidValue(f"rule {n}: {name} {problem}")
        keyword, reply = row.get("keyword"), row.get("reply")
        if not isinstance(keyword, str) or not keyword.strip():
            raise InvalidValue(f"rule {n}: the keyword is empty")
        if not isinstance(reply, str) or not reply.strip():
            raise InvalidValue(f"rule {n}: the reply is empty")
        try:
            priority = int(row.get("priority") or 0)
        except (TypeError, ValueError):
            raise InvalidValue(f"rule {n}: the priority must be a whole number") from None
        item_id = row.get("item_id")
        fields = {
            "keyword": keyword.strip(),
            "reply": reply,
            "match": str(row.get("match") or "contains"),
            "item_id": str(item_id).strip() or None if item_id else None,
            "priority": priority,
            "kind": str(row.get("kind") or "text"),
        }
        try:
            rules.append(rule_from_data(fields))
        except RuleError as exc:
            raise InvalidValue(f"rule {n}: {exc.reason}") from None
    return rules
