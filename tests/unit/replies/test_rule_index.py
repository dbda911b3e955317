import re
import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xianyu_autoreply.replies.rules import MatchKind, ReplyKind, Rule, RuleError, RuleIndex, validate_rule

CONTAINS, EXACT, REGEX = MatchKind.CONTAINS, MatchKind.EXACT, MatchKind.REGEX


def ids(index: RuleIndex, text: str, item_id: str | None = None) -> list[str]:
    return [rule.id for rule in index.matches(text, item_id=item_id)]


def winner(rules: list[Rule], text: str, item_id: str | None = None) -> str | None:
    found = RuleIndex.build(rules).match(text, item_id=item_id)
    return found.id if found else None


# --- matching -----------------------------------------------------------------------------------------------


def test_contains_matches_anywhere_in_the_message() -> None:
    assert winner([Rule("r1", "价格", "100元")], "请问这个价格多少") == "r1"


def test_contains_is_case_insensitive() -> None:
    assert winner([Rule("r1", "iPhone", "x")], "IPHONE 还在吗") == "r1"


def test_full_width_letters_and_digits_match_ascii_keywords() -> None:
    assert winner([Rule("r1", "qq1", "x")], "ＱＱ１") == "r1"


def test_exact_matches_only_the_whole_trimmed_message() -> None:
    rules = [Rule("r1", "在吗", "在的", match=EXACT)]
    assert winner(rules, "  在吗 ") == "r1"
    assert winner(rules, "在吗？") is None


def test_regex_searches_the_message() -> None:
    assert winner([Rule("r1", r"\d+元", "x", match=REGEX)], "80元行吗") == "r1"


def test_regex_is_case_sensitive_unless_it_says_so() -> None:
    assert winner([Rule("r1", "abc", "x", match=REGEX)], "ABC") is None
    assert winner([Rule("r1", "(?i)abc", "x", match=REGEX)], "ABC") == "r1"


def test_no_rule_matches_unrelated_text() -> None:
    assert winner([Rule("r1", "价格", "x")], "你好") is None


def test_empty_index_matches_nothing() -> None:
    index = RuleIndex.build([])
    assert index.match("anything") is None
    assert index.matches("anything") == []
    assert len(index) == 0


def test_item_rule_applies_only_to_its_item() -> None:
    rules = [Rule("r1", "价格", "x", item_id="42")]
    assert winner(rules, "价格", item_id="42") == "r1"
    assert winner(rules, "价格", item_id="7") is None
    assert winner(rules, "价格") is None


# --- the documented order ------------------------------------------------------------------------------------


def test_item_rule_beats_general_rule_even_with_lower_priority() -> None:
    rules = [Rule("general", "价格", "x", priority=9), Rule("item", "价", "y", item_id="42")]
    assert winner(rules, "价格", item_id="42") == "item"
    assert winner(rules, "价格", item_id="7") == "general"


def test_higher_priority_wins() -> None:
    rules = [Rule("low", "价格", "x"), Rule("high", "价", "y", priority=1)]
    assert winner(rules, "价格") == "high"


def test_exact_beats_contains_beats_regex() -> None:
    rules = [Rule("re", "价", "x", match=REGEX), Rule("contains", "价", "y"), Rule("exact", "价", "z", match=EXACT)]
    assert winner(rules, "价") == "exact"
    assert winner(rules, "价格") == "contains"
    assert winner(rules[:1], "价格") == "re"


def test_longer_keyword_wins() -> None:
    rules = [Rule("short", "包邮", "x"), Rule("long", "包邮吗", "y")]
    assert winner(rules, "这个包邮吗") == "long"


def test_earlier_rule_wins_a_full_tie() -> None:
    rules = [Rule("first", "价格", "x"), Rule("second", "价格", "y")]
    assert winner(rules, "价格") == "first"


def test_matches_lists_every_match_in_winning_order() -> None:
    rules = [
        Rule("re", r"\d+", "a", match=REGEX),
        Rule("short", "价", "b"),
        Rule("long", "价格", "c"),
        Rule("prio", "格", "d", priority=2),
        Rule("item", "价", "e", item_id="42"),
        Rule("other_item", "价", "f", item_id="7"),
    ]
    assert ids(RuleIndex.build(rules), "价格 100", item_id="42") == ["item", "prio", "long", "short", "re"]


def test_a_keyword_found_twice_is_listed_once() -> None:
    assert ids(RuleIndex.build([Rule("r1", "好", "x")]), "好好好") == ["r1"]


# --- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (Rule("r1", "   ", "x"), "keyword is empty"),
        (Rule("r1", "k", "  "), "reply is empty"),
        (Rule("r1", "k", "你好{buyer}"), "unknown variable {buyer}"),
        (Rule("r1", "k", "a } b"), "no opening brace"),
        (Rule("r1", "k", "x" * 2001), "longer than"),
        (Rule("r1", "k" * 201, "x"), "longer than 200"),
        (Rule("r1", "k", "not a url", kind=ReplyKind.IMAGE), "http(s) URL"),
        (Rule("r1", "(?=a)b", "x", match=REGEX), "not valid for RE2"),
        (Rule("r1", r"(a)\1", "x", match=REGEX), "not valid for RE2"),
        (Rule("r1", "(unclosed", "x", match=REGEX), "missing )"),
        (Rule("r1", r"\pL{1000}", "x", match=REGEX), "pattern too large"),
        (Rule("r1", "a" * 501, "x", match=REGEX), "longer than 500"),
        (Rule("r1", "a*", "x", match=REGEX), "matches an empty message"),
        (Rule("", "k", "x"), "no id"),
        (Rule("r1", "k", "x", item_id=" 42"), "item id"),
    ],
)
def test_refused_rule_says_why(rule: Rule, reason: str) -> None:
    with pytest.raises(RuleError, match=re.escape(reason)) as refused:
        validate_rule(rule)
    assert refused.value.rule_id == rule.id
    assert reason in refused.value.reason


def test_unknown_match_kind_is_refused() -> None:
    with pytest.raises(RuleError, match="unknown match"):
        Rule("r1", "k", "x", match="fuzzy")  # type: ignore[arg-type]


def test_match_kind_given_as_string_is_accepted() -> None:
    rule = Rule("r1", "k", "x", match="exact", kind="image")  # type: ignore[arg-type]
    assert rule.match is EXACT
    assert rule.kind is ReplyKind.IMAGE


def test_build_refuses_an_invalid_rule() -> None:
    with pytest.raises(RuleError, match="r2"):
        RuleIndex.build([Rule("r1", "k", "x"), Rule("r2", "", "x")])


def test_build_refuses_a_repeated_id() -> None:
    with pytest.raises(RuleError, match="same id"):
        RuleIndex.build([Rule("r1", "a", "x"), Rule("r1", "b", "y")])


def test_nested_quantifier_pattern_is_accepted_and_matches_in_linear_time() -> None:
    # `(a+)+$` hangs a backtracking engine on "aaaa...b"; RE2 guarantees linear time, so it is safe to accept.
    index = RuleIndex.build([Rule("r1", "(a+)+$", "x", match=REGEX)])
    started = time.perf_counter()
    assert index.match("a" * 50_000 + "b") is None
    assert time.perf_counter() - started < 1.0


def test_message_with_a_lone_surrogate_does_not_break_regex_matching() -> None:
    index = RuleIndex.build([Rule("r1", "a.b", "x", match=REGEX)])
    assert index.match("a\ud800b") is not None


def test_many_regex_rules_are_all_searched() -> None:
    rules = [Rule(f"r{n}", f"code{n}x", "x", match=REGEX) for n in range(1200)]
    index = RuleIndex.build(rules)
    assert index.match("my code1199x please").id == "r1199"  # type: ignore[union-attr]
    assert index.match("code0x").id == "r0"  # type: ignore[union-attr]


# --- the index answers exactly like a naive scan of the documented order -------------------------------------

_ALPHABET = "abAB价格包邮 ０1"
_PATTERNS = ["a+b", "(?i)价", "^a", "b$", "[0-9]+", "价格|包邮", "A.B", "(a|b)+$"]


def _naive_matches(rules: list[Rule], text: str, item_id: str | None) -> list[str]:
    def fold(s: str) -> str:
        return unicodedata.normalize("NFKC", s).casefold()

    rank = {EXACT: 0, CONTAINS: 1, REGEX: 2}
    found = []
    for position, rule in enumerate(rules):
        if rule.item_id is not None and rule.item_id != item_id:
            continue
        keyword = rule.keyword.strip()
        if rule.match is CONTAINS:
            hit = fold(keyword).strip() in fold(text)
        elif rule.match is EXACT:
            hit = fold(keyword).strip() == fold(text).strip()
        else:
            # Python's `$` also matches before a final newline, RE2's only at the end: spell that `\Z` here.
            hit = re.search(keyword.replace("$", r"\Z"), unicodedata.normalize("NFKC", text)) is not None
        if hit:
            key = (0 if rule.item_id else 1, -rule.priority, rank[rule.match], -len(keyword), position)
            found.append((key, rule.id))
    return [rule_id for _, rule_id in sorted(found)]


@st.composite
def rule_sets(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(min_value=0, max_value=25))
    rules = []
    for n in range(count):
        match = draw(st.sampled_from(list(MatchKind)))
        if match is REGEX:
            keyword = draw(st.sampled_from(_PATTERNS))
        else:
            keyword = draw(st.text(_ALPHABET, min_size=1, max_size=3).filter(lambda k: k.strip()))
        rules.append(
            Rule(
                f"r{n}",
                keyword,
                "reply",
                match=match,
                item_id=draw(st.sampled_from([None, None, "1", "2"])),
                priority=draw(st.integers(min_value=-1, max_value=1)),
            )
        )
    return rules


@settings(max_examples=300, deadline=None)
@given(
    rules=rule_sets(),
    text=st.text(_ALPHABET, max_size=10),
    item_id=st.sampled_from([None, "1", "2", "3"]),
)
def test_index_answers_like_a_naive_scan(rules: list[Rule], text: str, item_id: str | None) -> None:
    index = RuleIndex.build(rules)
    expected = _naive_matches(rules, text, item_id)
    assert ids(index, text, item_id) == expected
    found = index.match(text, item_id=item_id)
    assert (found.id if found else None) == (expected[0] if expected else None)


@settings(max_examples=200, deadline=None)
@given(rules=rule_sets(), text=st.text(max_size=20), item_id=st.sampled_from([None, "1"]))
def test_index_answers_like_a_naive_scan_on_any_unicode(rules: list[Rule], text: str, item_id: str | None) -> None:
    expected = _naive_matches(rules, text, item_id)
    assert ids(RuleIndex.build(rules), text, item_id) == expected
