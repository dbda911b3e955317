"""The session's cookie: parsed once, persisted through the owner's callback when the platform changes it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from ..protocol import parse_cookie, render_cookie


class CookieJar:
    """The session's cookie: parsed once, persisted through the owner's callback when the platform changes it."""

    def __init__(self, cookie: str, on_change: Callable[[str], Awaitable[None]] | None) -> None:
        self._cookies = parse_cookie(cookie)
        self._on_change = on_change

    @property
    def cookies(self) -> Mapping[str, str]:
        return self._cookies

    @property
    def header(self) -> str:
        return render_cookie(self._cookies)

    async def replace(self, cookies: Mapping[str, str]) -> None:
        self._cookies = dict(cookies)
        if self._on_change is not None:
            await self._on_change(render_cookie(self._cookies))
