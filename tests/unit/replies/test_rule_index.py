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
    assert winner([Rule("价格", "100元", id="r1")], "请问这个价格多少") == "r1"


def test_contains_is_case_insensitive() -> None:
    assert winner([Rule("iPhone", "x", id="r1")], "IPHONE 还在吗") == "r1"


def test_full_width_letters_and_digits_match_ascii_keywords() -> None:
    assert winner([Rule("qq1", "x", id="r1")], "ＱＱ１") == "r1"


def test_exact_matches_only_the_whole_trimmed_message() -> None:
    rules = [Rule("在吗", "在的", match=EXACT, id="r1")]
    assert winner(rules, "  在吗 ") == "r1"
    assert winner(rules, "在吗？") is None


def test_regex_searches_the_message() -> None:
    assert winner([Rule(r"\d+元", "x", match=REGEX, id="r1")], "80元行吗") == "r1"


def test_regex_is_case_sensitive_unless_it_says_so() -> None:
    assert winner([Rule("abc", "x", match=REGEX, id="r1")], "ABC") is None
    assert winner([Rule("(?i)abc", "x", match=REGEX, id="r1")], "ABC") == "r1"


def test_no_rule_matches_unrelated_text() -> None:
    assert winner([Rule("价格", "x", id="r1")], "你好") is None


def test_empty_index_matches_nothing() -> None:
    index = RuleIndex.build([])
    assert index.match("anything") is None
    assert index.matches("anything") == []
    assert len(index) == 0


def test_item_rule_applies_only_to_its_item() -> None:
    rules = [Rule("价格", "x", item_id="42", id="r1")]
    assert winner(rules, "价格", item_id="42") == "r1"
    assert winner(rules, "价格", item_id="7") is None
    assert winner(rules, "价格") is None


# --- the documented order ------------------------------------------------------------------------------------


def test_item_rule_beats_general_rule_even_with_lower_priority() -> None:
    rules = [Rule("价格", "x", priority=9, id="general"), Rule("价", "y", item_id="42", id="item")]
    assert winner(rules, "价格", item_id="42") == "item"
    assert winner(rules, "价格", item_id="7") == "general"


def test_higher_priority_wins() -> None:
    rules = [Rule("价格", "x", id="low"), Rule("价", "y", priority=1, id="high")]
    assert winner(rules, "价格") == "high"


def test_exact_beats_contains_beats_regex() -> None:
    rules = [
        Rule("价", "x", match=REGEX, id="re"),
        Rule("价", "y", id="contains"),
        Rule("价", "z", match=EXACT, id="exact"),
    ]
    assert winner(rules, "价") == "exact"
    assert winner(rules, "价格") == "contains"
    assert winner(rules[:1], "价格") == "re"


def test_longer_keyword_wins() -> None:
    rules = [Rule("包邮", "x", id="short"), Rule("包邮吗", "y", id="long")]
    assert winner(rules, "这个包邮吗") == "long"


def test_earlier_rule_wins_a_full_tie() -> None:
    rules = [Rule("价格", "x", id="first"), Rule("价格", "y", id="second")]
    assert winner(rules, "价格") == "first"


def test_matches_lists_every_match_in_winning_order() -> None:
    rules = [
        Rule(r"\d+", "a", match=REGEX, id="re"),
        Rule("价", "b", id="short"),
        Rule("价格", "c", id="long"),
        Rule("格", "d", priority=2, id="prio"),
        Rule("价", "e", item_id="42", id="item"),
        Rule("价", "f", item_id="7", id="other_item"),
    ]
    assert ids(RuleIndex.build(rules), "价格 100", item_id="42") == ["item", "prio", "long", "short", "re"]


def test_a_keyword_found_twice_is_listed_once() -> None:
    assert ids(RuleIndex.build([Rule("好", "x", id="r1")]), "好好好") == ["r1"]


# --- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (Rule("   ", "x", id="r1"), "keyword is empty"),
        (Rule("k", "  ", id="r1"), "reply is empty"),
        (Rule("k", "你好{buyer}", id="r1"), "unknown variable {buyer}"),
        (Rule("k", "a } b", id="r1"), "no opening brace"),
        (Rule("k", "x" * 2001, id="r1"), "longer than"),
        (Rule("k" * 201, "x", id="r1"), "longer than 200"),
        (Rule("k", "not a url", kind=ReplyKind.IMAGE, id="r1"), "http(s) URL"),
        (Rule("(?=a)b", "x", match=REGEX, id="r1"), "not valid for RE2"),
        (Rule(r"(a)\1", "x", match=REGEX, id="r1"), "not valid for RE2"),
        (Rule("(unclosed", "x", match=REGEX, id="r1"), "missing )"),
        (Rule(r"\pL{1000}", "x", match=REGEX, id="r1"), "pattern too large"),
        (Rule("a" * 501, "x", match=REGEX, id="r1"), "longer than 500"),
        (Rule("a*", "x", match=REGEX, id="r1"), "matches an empty message"),
        (Rule("k", "x", id=""), "no id"),
        (Rule("k", "x", item_id=" 42", id="r1"), "item id"),
    ],
)
def test_refused_rule_says_why(rule: Rule, reason: str) -> None:
    with pytest.raises(RuleError, match=re.escape(reason)) as refused:
        validate_rule(rule)
    assert refused.value.rule_id == rule.id
    assert reason in refused.value.reason


def test_unknown_match_kind_is_refused() -> None:
    with pytest.raises(RuleError, match="unknown match"):
        Rule("k", "x", match="fuzzy", id="r1")  # type: ignore[arg-type]


def test_match_kind_given_as_string_is_accepted() -> None:
    rule = Rule("k", "x", match="exact", kind="image", id="r1")  # type: ignore[arg-type]
    assert rule.match is EXACT
    assert rule.kind is ReplyKind.IMAGE


def test_build_refuses_an_invalid_rule() -> None:
    with pytest.raises(RuleError, match="r2"):
        RuleIndex.build([Rule("k", "x", id="r1"), Rule("", "x", id="r2")])


def test_build_refuses_a_repeated_id() -> None:
    with pytest.raises(RuleError, match="same id"):
        RuleIndex.build([Rule("a", "x", id="r1"), Rule("b", "y", id="r1")])


def test_nested_quantifier_pattern_is_accepted_and_matches_in_linear_time() -> None:
    # `(a+)+$` hangs a backtracking engine on "aaaa...b"; RE2 guarantees linear time, so it is safe to accept.
    index = RuleIndex.build([Rule("(a+)+$", "x", match=REGEX, id="r1")])
    started = time.perf_counter()
    assert index.match("a" * 50_000 + "b") is None
    assert time.perf_counter() - started < 1.0


def test_message_with_a_lone_surrogate_does_not_break_regex_matching() -> None:
    index = RuleIndex.build([Rule("a.b", "x", match=REGEX, id="r1")])
    assert index.match("a\ud800b") is not None


def test_many_regex_rules_are_all_searched() -> None:
    rules = [Rule(f"code{n}x", "x", match=REGEX, id=f"r{n}") for n in range(1200)]
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
                keyword,
                "reply",
                match=match,
                item_id=draw(st.sampled_from([None, None, "1", "2"])),
                priority=draw(st.integers(min_value=-1, max_value=1)),
                id=f"r{n}",
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
