"""Cookie strings (PROTOCOL.md §1.1-§1.2, §2.4)."""

from __future__ import annotations

import pytest

from xianyu_autoreply.protocol import (
    InvalidCookie,
    ProtocolError,
    mask_cookie,
    merge_set_cookie,
    mtop_token,
    parse_cookie,
    render_cookie,
    seller_id,
)

TOKEN = "0123456789abcdef0123456789abcdef"
REAL = (
    f"cna=Xy1zAbCdEfGhIjKlMn0p; t=9f8e7d6c5b4a39281706f5e4d3c2b1a0; unb=2200000000001; "
    f"cookie2=1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d; _m_h5_tk={TOKEN}_1742458817389; "
    "_m_h5_tk_enc=abcdef0123456789abcdef0123456789; XSRF-TOKEN=5d2c1b0a-9f8e-4d7c-b6a5-443322110000; "
    "sgcookie=E100abcdefghijklmnopqrstuvwxyz0123456789"
)


def test_parse_keeps_the_order_of_the_string() -> None:
    cookies = parse_cookie(REAL)
    assert list(cookies) == ["cna", "t", "unb", "cookie2", "_m_h5_tk", "_m_h5_tk_enc", "XSRF-TOKEN", "sgcookie"]
    assert cookies["unb"] == "2200000000001"
    assert cookies["_m_h5_tk"] == f"{TOKEN}_1742458817389"


def test_later_duplicate_wins_and_keeps_the_first_position() -> None:
    cookies = parse_cookie("a=1; unb=22; b=2; a=3")
    assert cookies == {"a": "3", "unb": "22", "b": "2"}
    assert list(cookies) == ["a", "unb", "b"]


def test_value_is_split_at_the_first_equals_only() -> None:
    assert parse_cookie("unb=22; x5sec=abc==; q=a=b")["q"] == "a=b"
    assert parse_cookie("unb=22; x5sec=abc==")["x5sec"] == "abc=="


def test_semicolon_without_space_separates_cookies() -> None:
    # The peers split on "; " only and would glue these into one value (§1.1, inferred); we accept both.
    assert parse_cookie("a=1;unb=22;b=2") == {"a": "1", "unb": "22", "b": "2"}
    assert parse_cookie("a=1;unb=22; b=2") == {"a": "1", "unb": "22", "b": "2"}


def test_pieces_without_equals_are_dropped() -> None:
    assert parse_cookie("flag; unb=22; ; other") == {"unb": "22"}


def test_empty_value_is_kept() -> None:
    assert parse_cookie("unb=22; x5sec=") == {"unb": "22", "x5sec": ""}


def test_surrounding_whitespace_and_a_trailing_newline_are_tolerated() -> None:
    assert parse_cookie("  unb=22; a=1 \n") == {"unb": "22", "a": "1"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("a=1; b=2", id="no-unb"),
        pytest.param("unb=; a=1", id="empty-unb"),
        pytest.param("hello world", id="prose"),
        pytest.param("<html><body>请登录</body></html>", id="html"),
        pytest.param('[{"name": "unb", "value": "22"}]', id="json-export"),
        pytest.param("https://www.goofish.com/?unb=22", id="url"),
        pytest.param("Cookie: unb=22", id="header-line"),
        pytest.param("unb=abc", id="non-digit-unb"),
        pytest.param("unb=22 a=1", id="space-instead-of-semicolon"),
        pytest.param("unb=-22", id="signed-unb"),
        pytest.param("unb=22; a=" + "x" * 70_000, id="huge"),
        pytest.param("unb=22;\na=1", id="newline"),
        pytest.param("unb=22;\r a=1", id="carriage-return"),
        pytest.param("unb=22; a=\x00", id="nul"),
    ],
)
def test_unusable_cookie_strings_raise_invalid_cookie(raw: str) -> None:
    with pytest.raises(InvalidCookie):
        parse_cookie(raw)


def test_invalid_cookie_is_a_protocol_error_and_a_value_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_cookie("a=1")
    assert isinstance(caught.value, ValueError)
    assert "unb" in str(caught.value)


def test_a_non_string_raises_invalid_cookie() -> None:
    with pytest.raises(InvalidCookie):
        parse_cookie(b"unb=22")  # type: ignore[arg-type]


@pytest.mark.parametrize("unb", ["\u0661\u0662\u0663", "22\u00b2", "\uff12\uff12"])
def test_unb_must_be_ascii_digits(unb: str) -> None:
    with pytest.raises(InvalidCookie):
        parse_cookie(f"unb={unb}")


def test_render_is_the_inverse_of_parse_for_a_canonical_string() -> None:
    assert render_cookie(parse_cookie(REAL)) == REAL


def test_parse_of_render_round_trips_a_mapping() -> None:
    cookies = {"unb": "22", "x5sec": "a=b==", "t": ""}
    assert parse_cookie(render_cookie(cookies)) == cookies
    assert list(parse_cookie(render_cookie(cookies))) == list(cookies)


def test_render_normalises_the_separator() -> None:
    assert render_cookie(parse_cookie("a=1;unb=22")) == "a=1; unb=22"


def test_seller_id_is_unb() -> None:
    assert seller_id(parse_cookie(REAL)) == "2200000000001"
    with pytest.raises(InvalidCookie):
        seller_id({"a": "1"})


def test_mtop_token_is_the_part_of_m_h5_tk_before_the_first_underscore() -> None:
    assert mtop_token(parse_cookie(REAL)) == TOKEN
    assert mtop_token({"_m_h5_tk": "abc_1_2"}) == "abc"
    assert mtop_token({"_m_h5_tk": "nounderscore"}) == "nounderscore"


def test_mtop_token_is_empty_without_the_cookie() -> None:
    assert mtop_token({"unb": "22"}) == ""


def test_merge_set_cookie_ignores_attributes_updates_in_place_and_appends_new_names() -> None:
    cookies = parse_cookie("unb=22; _m_h5_tk=old_1; t=keep")
    merged = merge_set_cookie(
        cookies,
        [
            "_m_h5_tk=new_2; Domain=.goofish.com; Path=/; Max-Age=86400; Secure; SameSite=None",
            "_m_h5_tk_enc=enc2; Domain=.goofish.com; Path=/",
            " x5sec = v==; Expires=Wed, 21 Oct 2099 07:28:00 GMT",
        ],
    )
    assert merged == {"unb": "22", "_m_h5_tk": "new_2", "t": "keep", "_m_h5_tk_enc": "enc2", "x5sec": "v=="}
    assert list(merged) == ["unb", "_m_h5_tk", "t", "_m_h5_tk_enc", "x5sec"]
    assert render_cookie(merged) == "unb=22; _m_h5_tk=new_2; t=keep; _m_h5_tk_enc=enc2; x5sec=v=="


def test_merge_set_cookie_does_not_mutate_its_input() -> None:
    cookies = {"unb": "22", "t": "1"}
    merge_set_cookie(cookies, ["t=2"])
    assert cookies == {"unb": "22", "t": "1"}


def test_a_deleting_set_cookie_stores_the_empty_value() -> None:
    # Attributes are ignored (§2.4), so Max-Age=0 does not remove the name.
    assert merge_set_cookie({"unb": "22", "x5sec": "v"}, ["x5sec=; Max-Age=0"]) == {"unb": "22", "x5sec": ""}


def test_set_cookie_without_a_pair_is_ignored() -> None:
    assert merge_set_cookie({"unb": "22"}, ["garbage", "=nameless", ""]) == {"unb": "22"}


def test_mask_cookie_hides_every_secret_value_but_keeps_names_and_unb() -> None:
    masked = mask_cookie(REAL)
    cookies = parse_cookie(REAL)
    for name, value in cookies.items():
        assert f"{name}=" in masked
        if name != "unb":
            assert value not in masked
    assert "unb=2200000000001" in masked
    assert TOKEN not in masked


def test_mask_cookie_hides_short_values_completely() -> None:
    assert mask_cookie("unb=22; t=abc") == "unb=22; t=***"


def test_mask_cookie_of_an_unusable_string_shows_nothing() -> None:
    assert mask_cookie(f"_m_h5_tk={TOKEN}_1") == "***"
    assert mask_cookie("") == "***"
