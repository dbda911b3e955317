"""Keyword rules and the index that picks one rule for a buyer's message.

Matching:

- `contains` and `exact` compare normalised text: NFKC (so full-width `Ｑ`/`１` equal `q`/`1`) then casefold, so
  both are case-insensitive. Keywords are trimmed; an `exact` rule matches when the whole trimmed message equals
  the keyword. Both kinds share ONE Aho-Corasick automaton (pyahocorasick): one pass over the message finds every
  `contains` keyword, and a trie lookup of the whole message finds the `exact` ones.
- `regex` patterns run on RE2 (google-re2), which matches in time linear in the message, so no pattern can hang
  an account (no catastrophic backtracking); look-arounds and back-references are therefore refused. A pattern
  searches the NFKC-normalised message anywhere (use `^...$` to anchor it) and is case-sensitive unless it says
  `(?i)`. All regex rules are searched together through RE2 sets.

A rule with an `item_id` applies only to messages about that item. When several rules match, the first one in
this order answers (a total order, so the choice never depends on the automaton or the set):

1. item-scoped rules before general ones;
2. higher `priority` first;
3. `exact` before `contains` before `regex`;
4. longer keyword (as written, trimmed) first;
5. earlier in the rule list first.

A rule is checked when saved (`validate_rule`); a refused rule raises `RuleError` whose message says why.
`Rule` is the one shape of a keyword rule: the store saves and returns it, the API and the web convert to it.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from typing import Any

import ahocorasick
import re2

from .errors import RuleError as RuleError  # noqa: PLC0414 (explicit re-export: callers import it from here)
from .errors import TemplateError
from .templates import validate_template

MAX_KEYWORD_CHARS = 200
MAX_RULE_ID_CHARS = 64
MAX_PATTERN_CHARS = 500
MAX_REPLY_CHARS = 2000
# Memory RE2 may use to compile one pattern: a pattern above it (e.g. a huge counted repetition) is refused.
MAX_PATTERN_MEMORY = 1 << 20
# Patterns per RE2 set: one set for thousands of patterns would exceed RE2's memory budget and fail to compile.
_PATTERNS_PER_SET = 500


class MatchKind(enum.StrEnum):
    """How a rule's keyword is compared with the buyer's message."""

    CONTAINS = "contains"
    EXACT = "exact"
    REGEX = "regex"


class ReplyKind(enum.StrEnum):
    """What a rule sends: a text (a template) or an image (its URL)."""

    TEXT = "text"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class Rule:
    """One keyword rule of an account, as the seller saved it: the one shape the store, engine, API and web share.

    `id` None means "not saved yet": the store gives it one, and `RuleIndex.build` names it by its position.
    """

    keyword: str
    reply: str
    _: KW_ONLY
    match: MatchKind = MatchKind.CONTAINS
    item_id: str | None = None
    priority: int = 0
    kind: ReplyKind = ReplyKind.TEXT
    id: str | None = None

    def __post_init__(self) -> None:
        # Forms, JSON and database rows hand over plain strings; turn them into the enums (or refuse them) here.
        for name, enum_type in (("match", MatchKind), ("kind", ReplyKind)):
            value = getattr(self, name)
            if not isinstance(value, enum_type):
                try:
                    object.__setattr__(self, name, enum_type(value))
                except ValueError:
                    allowed = ", ".join(member.value for member in enum_type)
                    raise RuleError(self.id, f"unknown {name} {value!r} ({name} must be one of {allowed})") from None


def rule_from_data(data: Mapping[str, Any]) -> Rule:
    """A rule from plain data (a REST body, a form row, imported JSON, a command): the one way in from text.

    `match` and `kind` are their string values; a value of the wrong type or an unknown kind raises `RuleError`.
    """
    rule_id = data.get("id")
    named = rule_id if isinstance(rule_id, str) else None
    for name in ("keyword", "reply"):
        if not isinstance(data.get(name), str):
            raise RuleError(named, f"the {name} is missing or not text")
    if rule_id is not None and not isinstance(rule_id, str):
        raise RuleError(None, "the rule id must be text")
    return Rule(
        data["keyword"],
        data["reply"],
        match=data.get("match", MatchKind.CONTAINS),
        item_id=data.get("item_id"),
        priority=data.get("priority", 0),
        kind=data.get("kind", ReplyKind.TEXT),
        id=rule_id,
    )


def rule_data(rule: Rule) -> dict[str, Any]:
    """A rule as plain JSON data, the inverse of `rule_from_data` (the REST body, the export, a command)."""
    return {
        "keyword": rule.keyword,
        "reply": rule.reply,
        "match": rule.match.value,
        "item_id": rule.item_id,
        "priority": rule.priority,
        "kind": rule.kind.value,
        "id": rule.id,
    }


def normalise(text: str) -> str:
    """The form `contains`/`exact` keywords and messages are compared in: NFKC, casefolded."""
    return unicodedata.normalize("NFKC", text).casefold()


def validate_rule(rule: Rule) -> None:
    """Refuse (RuleError, with the reason) a rule that could not work as the seller expects."""
    reason = _refusal(rule)
    if reason is not None:
        raise RuleError(rule.id, reason)


def _refusal(rule: Rule) -> str | None:
    if rule.id is not None and not rule.id:
        return "the rule has no id"
    if rule.id is not None and len(rule.id) > MAX_RULE_ID_CHARS:
        return f"the rule id is longer than {MAX_RULE_ID_CHARS} characters"
    if not isinstance(rule.priority, int) or isinstance(rule.priority, bool):
        return "the priority must be a whole number"
    if rule.item_id is not None and (not rule.item_id or rule.item_id != rule.item_id.strip()):
        return "the item id is empty or has spaces around it"
    keyword = rule.keyword.strip()
    if not keyword:
        return "the keyword is empty"
    if rule.match is MatchKind.REGEX:
        if len(keyword) > MAX_PATTERN_CHARS:
            return f"the pattern is longer than {MAX_PATTERN_CHARS} characters"
        reason = _pattern_refusal(keyword)
        if reason is not None:
            return reason
    else:
        if len(keyword) > MAX_KEYWORD_CHARS:
            return f"the keyword is longer than {MAX_KEYWORD_CHARS} characters"
        if not normalise(keyword).strip():
            return "the keyword is empty once normalised"
    if not rule.reply.strip():
        return "the reply is empty"
    if len(rule.reply) > MAX_REPLY_CHARS:
        return f"the reply is longer than {MAX_REPLY_CHARS} characters"
    if rule.kind is ReplyKind.TEXT:
        try:
            validate_template(rule.reply)
        except TemplateError as exc:
            return f"the reply: {exc}"
    elif not rule.reply.startswith(("https://", "http://")) or any(c.isspace() for c in rule.reply):
        return "an image reply must be an http(s) URL"
    return None


def _re2_options(*, max_mem: int) -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    return options


_PATTERN_OPTIONS = _re2_options(max_mem=MAX_PATTERN_MEMORY)
_SET_OPTIONS = _re2_options(max_mem=64 * MAX_PATTERN_MEMORY)


def _pattern_refusal(pattern: str) -> str | None:
    try:
        compiled = re2.compile(pattern, options=_PATTERN_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        return f"the pattern is not valid for RE2 (no look-arounds or back-references; size limited): {detail}"
    if compiled.search("") is not None:
        return "the pattern matches an empty message, so it would answer every message"
    return None


# Sort key of a candidate: smaller wins (see the module docstring).
_Key = tuple[int, int, int, int, int]
_KIND_RANK = {MatchKind.EXACT: 0, MatchKind.CONTAINS: 1, MatchKind.REGEX: 2}


def _key(rule: Rule, position: int) -> _Key:
    scope = 0 if rule.item_id is not None else 1
    return (scope, -rule.priority, _KIND_RANK[rule.match], -len(rule.keyword.strip()), position)


@dataclass(slots=True)
class _Candidates:
    """The rules sharing one keyword (or one pattern): the best general one and the best per item."""

    general: tuple[_Key, Rule] | None = None
    by_item: dict[str, tuple[_Key, Rule]] = field(default_factory=dict)
    every: list[tuple[_Key, Rule]] = field(default_factory=list)

    def add(self, key: _Key, rule: Rule) -> None:
        self.every.append((key, rule))
        if rule.item_id is None:
            if self.general is None or key < self.general[0]:
                self.general = (key, rule)
        else:
            best = self.by_item.get(rule.item_id)
            if best is None or key < best[0]:
                self.by_item[rule.item_id] = (key, rule)

    def best(self, item_id: str | None) -> tuple[_Key, Rule] | None:
        # An item rule outranks every general rule (first element of the key), so it is enough to look there first.
        if item_id is not None:
            scoped = self.by_item.get(item_id)
            if scoped is not None:
                return scoped
        return self.general

    def eligible(self, item_id: str | None) -> Iterable[tuple[_Key, Rule]]:
        return (c for c in self.every if c[1].item_id is None or c[1].item_id == item_id)


@dataclass(slots=True)
class _Keyword:
    contains: _Candidates = field(default_factory=_Candidates)
    exact: _Candidates = field(default_factory=_Candidates)


class RuleIndex:
    """The rules of one account, compiled for matching. Immutable: rebuild it when the rules change."""

    __slots__ = ("_automaton", "_pattern_sets", "rules")

    def __init__(
        self,
        rules: tuple[Rule, ...],
        automaton: ahocorasick.Automaton | None,
        pattern_sets: tuple[tuple[re2.Set, tuple[_Candidates, ...]], ...],
    ) -> None:
        self.rules = rules
        self._automaton = automaton
        self._pattern_sets = pattern_sets

    @classmethod
    def build(cls, rules: Iterable[Rule]) -> RuleIndex:
        """Validate and compile rules; raises RuleError for the first refused rule or a repeated id.

        A rule not saved yet (`id` None) is named by its position ("0", "1", ...), as its reply source would be.
        """
        ordered = tuple(rule if rule.id is not None else replace(rule, id=str(n)) for n, rule in enumerate(rules))
        keywords: dict[str, _Keyword] = {}
        patterns: dict[str, _Candidates] = {}
        seen_ids: set[str | None] = set()
        for position, rule in enumerate(ordered):
            validate_rule(rule)
            if rule.id in seen_ids:
                raise RuleError(rule.id, "another rule has the same id")
            seen_ids.add(rule.id)
            key = _key(rule, position)
            if rule.match is MatchKind.REGEX:
                patterns.setdefault(rule.keyword.strip(), _Candidates()).add(key, rule)
            else:
                entry = keywords.setdefault(normalise(rule.keyword).strip(), _Keyword())
                target = entry.exact if rule.match is MatchKind.EXACT else entry.contains
                target.add(key, rule)
        automaton = None
        if keywords:
            automaton = ahocorasick.Automaton()
            for word, entry in keywords.items():
                automaton.add_word(word, entry)
            automaton.make_automaton()
        return cls(ordered, automaton, _compile_sets(patterns))

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, text: str, *, item_id: str | None = None) -> Rule | None:
        """The rule that answers `text` (about `item_id`, if known), or None."""
        best: tuple[_Key, Rule] | None = None
        for candidates in self._hits(text):
            found = candidates.best(item_id)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        return best[1] if best is not None else None

    def matches(self, text: str, *, item_id: str | None = None) -> list[Rule]:
        """Every rule that matches, in the order they win (the first is `match`'s answer); for explanations."""
        found: dict[int, tuple[_Key, Rule]] = {}
        for candidates in self._hits(text):
            for key, rule in candidates.eligible(item_id):
                found[key[-1]] = (key, rule)
        return [rule for _, rule in sorted(found.values(), key=lambda c: c[0])]

    def _hits(self, text: str) -> Iterable[_Candidates]:
        if self._automaton is not None:
            folded = normalise(text)
            for _, entry in self._automaton.iter(folded):
                if entry.contains.every:
                    yield entry.contains
            whole = self._automaton.get(folded.strip(), None)
            if whole is not None and whole.exact.every:
                yield whole.exact
        if self._pattern_sets:
            # RE2 reads UTF-8; a lone surrogate (possible after JSON decoding) must not make matching fail.
            utf8 = unicodedata.normalize("NFKC", text).encode("utf-8", "replace")
            for pattern_set, candidates in self._pattern_sets:
                for index in pattern_set.Match(utf8) or ():
                    yield candidates[index]


def _compile_sets(patterns: dict[str, _Candidates]) -> tuple[tuple[re2.Set, tuple[_Candidates, ...]], ...]:
    items = list(patterns.items())
    compiled: list[tuple[re2.Set, tuple[_Candidates, ...]]] = []
    for start in range(0, len(items), _PATTERNS_PER_SET):
        compiled.extend(_compile_chunk(items[start : start + _PATTERNS_PER_SET]))
    return tuple(compiled)


def _compile_chunk(chunk: Sequence[tuple[str, _Candidates]]) -> list[tuple[re2.Set, tuple[_Candidates, ...]]]:
    pattern_set = re2.Set.SearchSet(_SET_OPTIONS)
    for pattern, _ in chunk:
        pattern_set.Add(pattern)
    try:
        pattern_set.Compile()
    except re2.error:
        # Too big together (large validated patterns): halve until it fits; one validated pattern always does.
        if len(chunk) == 1:
            raise
        middle = len(chunk) // 2
        return _compile_chunk(chunk[:middle]) + _compile_chunk(chunk[middle:])
    return [(pattern_set, tuple(c for _, c in chunk))]
