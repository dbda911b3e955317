"""`Rule` as the one shape of a keyword rule: plain data in and out, and rules not saved yet."""

import pytest

from xianyu_autoreply.replies import MatchKind, ReplyKind, Rule, RuleError, RuleIndex, rule_data, rule_from_data


def test_plain_data_round_trips_through_the_one_conversion() -> None:
    rule = Rule(
        r"\d+",
        "https://img.example/a.jpg",
        match=MatchKind.REGEX,
        item_id="9",
        priority=2,
        kind=ReplyKind.IMAGE,
        id="r",
    )
    data = rule_data(rule)
    assert data == {
        "keyword": r"\d+",
        "reply": "https://img.example/a.jpg",
        "match": "regex",
        "item_id": "9",
        "priority": 2,
        "kind": "image",
        "id": "r",
    }
    assert rule_from_data(data) == rule


def test_plain_data_takes_the_defaults_and_turns_strings_into_enums() -> None:
    rule = rule_from_data({"keyword": "价格", "reply": "不议价", "match": "exact"})
    assert rule == Rule("价格", "不议价", match=MatchKind.EXACT)
    assert rule.match is MatchKind.EXACT and rule.kind is ReplyKind.TEXT and rule.id is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"reply": "x"}, "keyword is missing"),
        ({"keyword": 5, "reply": "x"}, "keyword is missing or not text"),
        ({"keyword": "k", "reply": "x", "id": 7}, "id must be text"),
        ({"keyword": "k", "reply": "x", "kind": "video"}, "unknown kind 'video'"),
    ],
)
def test_bad_plain_data_is_a_rule_error(data: dict[str, object], reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        rule_from_data(data)


def test_a_rule_not_saved_yet_is_named_by_its_position() -> None:
    index = RuleIndex.build([Rule("a", "x", id="keep"), Rule("b", "y")])
    assert [r.id for r in index.rules] == ["keep", "1"]
    with pytest.raises(RuleError, match="'1': the keyword is empty"):
        RuleIndex.build([Rule("a", "x"), Rule(" ", "y")])


def test_a_rule_id_longer_than_the_store_keeps_is_refused() -> None:
    with pytest.raises(RuleError, match="longer than 64"):
        RuleIndex.build([Rule("a", "x", id="i" * 65)])
