"""Cookie strings: the seller's identity (PROTOCOL.md §1.1-§1.2, §2.4).

A cookie string is parsed into an ordered mapping and rendered back in the same order, so that a merged
Set-Cookie keeps the string stable apart from the values that really changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .errors import InvalidCookie

SEPARATOR = "; "
_MAX_COOKIE_CHARS = 64 * 1024


def parse_cookie(raw: str) -> dict[str, str]:
    """Parse a browser cookie string into an ordered `{name: value}`; requires `unb`.

    Pieces are split on ";" (with or without the space browsers put after it) and each at its first "=".
    Later duplicates win, as on the platform's clients.
    """
    if not isinstance(raw, str):
        raise InvalidCookie(f"a cookie string must be text, not {type(raw).__name__}")
    text = raw.strip()
    if not text:
        raise InvalidCookie("the cookie string is empty")
    if len(text) > _MAX_COOKIE_CHARS:
        raise InvalidCookie(f"the cookie string is {len(text)} characters long; at most {_MAX_COOKIE_CHARS}")
    if any(ch in text for ch in "\r\n\x00"):
        raise InvalidCookie("the cookie string contains a line break or NUL character")
    cookies: dict[str, str] = {}
    for piece in text.split(";"):
        name, sep, value = piece.strip().partition("=")
        name = name.strip()
        if not sep or not name or any(ch.isspace() for ch in name):
            continue
        cookies[name] = value.strip()
    if not cookies:
        raise InvalidCookie("this is not a cookie string: no name=value pair found")
    unb = cookies.get("unb", "")
    if not unb:
        raise InvalidCookie("the cookie string has no `unb` (the seller's user id): copy the whole cookie")
    if not (unb.isascii() and unb.isdigit()):
        raise InvalidCookie("the `unb` cookie must be the seller's numeric user id")
    return cookies


def render_cookie(cookies: Mapping[str, str]) -> str:
    """Render a mapping back into a cookie string, in its order."""
    return SEPARATOR.join(f"{name}={value}" for name, value in cookies.items())


def seller_id(cookies: Mapping[str, str]) -> str:
    """The seller's numeric user id (`unb`)."""
    try:
        return cookies["unb"]
    except KeyError:
        raise InvalidCookie("the cookie has no `unb`") from None


def mtop_token(cookies: Mapping[str, str]) -> str:
    """The signing token: `_m_h5_tk` up to its first "_" (empty when absent, as the platform's clients do)."""
    return cookies.get("_m_h5_tk", "").split("_", 1)[0]


def merge_set_cookie(cookies: Mapping[str, str], set_cookie_headers: Iterable[str]) -> dict[str, str]:
    """Merge `Set-Cookie` header values into a copy of `cookies`: new names are appended, known ones updated.

    Attributes (Domain, Path, Expires, ...) are ignored: the cookie string carries only names and values.
    """
    merged = dict(cookies)
    for header in set_cookie_headers:
        pair = header.split(";", 1)[0]
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep and name:
            merged[name] = value.strip()
    return merged


def mask_cookie(raw: str) -> str:
    """A cookie string safe to show: names kept, `unb` kept, every other value reduced to a few characters."""
    try:
        cookies = parse_cookie(raw)
    except InvalidCookie:
        return "***"
    shown = []
    for name, value in cookies.items():
        if name == "unb":
            shown.append(f"{name}={value}")
        elif len(value) > 8:
            shown.append(f"{name}={value[:2]}***{value[-2:]}")
        else:
            shown.append(f"{name}=***")
    return SEPARATOR.join(shown)
