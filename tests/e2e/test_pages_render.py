"""Every admin page renders in both languages with every word translated (plain HTTP, no browser needed)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from xianyu_autoreply.api.web.i18n import EN, ZH
from xianyu_autoreply.simulator import Simulator

from ..polling import eventually as _poll
from .conftest import ADMIN_PASSWORD

DOTTED_KEYS = sorted(k for k in ZH if "." in k)


async def eventually(check: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    """The shared poll (tests/polling.py) with the browser's longer bound."""
    return await _poll(check, timeout=timeout)


def test_both_languages_have_the_same_words() -> None:
    assert set(EN) == set(ZH)


async def _signed_in(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = await client.post(
        "/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token.group(1), "next": "/"}
    )
    assert answer.status_code == 303


async def test_every_page_renders_translated_in_both_languages(server: Any, sim: Simulator) -> None:
    seller = sim.create_seller(nick="渲染小店")
    await server.engine.add("shop-p", seller["cookie"], owner="admin")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        await _signed_in(client)
        await eventually(lambda: server.engine.state("shop-p").lifecycle == "running")
        pushed = sim.push_message(seller["unb"], "在吗")
        await eventually(lambda: server.store.list_messages("shop-p"))
        paths = [
            "/",
            "/accounts/shop-p",
            "/accounts/shop-p/chats",
            f"/accounts/shop-p/chats/{pushed['chat_id']}",
            "/orders",
            "/users",
        ]
        for lang in ("zh", "en"):
            for path in paths:
                page = await client.get(path, params={"lang": lang})
                assert page.status_code == 200, (path, page.text[:300])
                assert page.headers["x-frame-options"] == "DENY"
                untranslated = [k for k in DOTTED_KEYS if k in page.text]
                assert not untranslated, (path, lang, untranslated)
        assert (await client.get("/login")).status_code in (200, 303)
