"""A corpus of nasty values for every free-text field, through the API and the engine: each is refused with a 4xx
naming the field and nothing changes, or (where it is merely odd but legal text) stored exactly and shown escaped.
Never a 500, never a hang, never a half-applied change."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import pytest

from ..api.conftest import PASSWORD, Api

pytestmark = pytest.mark.asyncio(loop_scope="module")

MIB = "x" * (1 << 20)
# Values no field should accept: too big, or text no database stores faithfully (NUL is refused by PostgreSQL and
# truncates C strings; a lone surrogate cannot be encoded as UTF-8 at all).
INVALID: dict[str, str] = {
    "1 MiB": MIB,
    "NUL": "abc\x00def",
    "lone surrogate": "abc\ud800def",
    "binary": "\x00\x01\x02\xff\ufffe" * 50,
}
# Odd but legal text: stored as given, and HTML is escaped wherever it is shown.
ODD: dict[str, str] = {
    "sql": "'; DROP TABLE accounts; --",
    "html": '<script>alert("x")</script><img src=x onerror=alert(1)>',
    "rtl": "abc\u202edcba\u200f",
    "confusable": "аdmin",  # Cyrillic а
    "catastrophic regex": "(a+)+$",
    "template braces": "{order_id.__class__}{{}}{",
}


async def snapshot(api: Api, client: httpx.AsyncClient, account_id: str) -> dict[str, Any]:
    """Everything a hostile write could have changed, as the owner and the store see it."""
    store = api.server.store
    return {
        "account": {
            k: v for k, v in (await client.get(f"/api/v1/accounts/{account_id}")).json().items() if k != "state"
        },
        "cookie": await store.get_account_cookie(account_id),
        "rules": (await client.get(f"/api/v1/accounts/{account_id}/rules")).json(),
        "settings": (await client.get(f"/api/v1/accounts/{account_id}/settings")).json(),
        "users": sorted(u.username for u in await store.list_users()),
        "accounts": sorted(a.id for a in await store.list_accounts()),
    }


def writes(account_id: str, value: str) -> dict[str, tuple[str, str, Any]]:
    """Every write taking free text -> (method, path, body), named by the field the error must name."""
    base = f"/api/v1/accounts/{account_id}"
    return {
        "cookie": ("PUT", f"{base}/cookie", {"cookie": value}),
        "remark": ("PATCH", base, {"remark": value}),
        "keyword": ("PUT", f"{base}/rules", [{"keyword": value, "reply": "ok", "match": "regex"}]),
        "reply": ("PUT", f"{base}/rules", [{"keyword": "k", "reply": value}]),
        "default_reply": ("PUT", f"{base}/settings", {"default_reply": value}),
        "username": ("POST", "/api/v1/users", {"username": value, "password": PASSWORD}),
        "id": ("POST", "/api/v1/accounts", {"id": value, "cookie": "unb=1; cookie2=abc"}),
    }


async def send(client: httpx.AsyncClient, method: str, path: str, body: Any) -> httpx.Response:
    """JSON with \\u escapes (as a hostile client may send lone surrogates; httpx itself would refuse to encode)."""
    content = json.dumps(body, ensure_ascii=True)
    return await client.request(method, path, content=content, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid_text_is_refused_naming_the_field_and_changes_nothing(api: Api, case: str) -> None:
    admin = await api.admin()
    account_id, _ = await api.account(admin, enabled=False)
    before = await snapshot(api, admin, account_id)
    for field, (method, path, body) in writes(account_id, INVALID[case]).items():
        response = await send(admin, method, path, body)
        assert 400 <= response.status_code < 500, (case, field, response.status_code, response.text[:300])
        answer = response.json()
        assert field in str(answer.get("field", "")) or field in answer.get("message", ""), (case, field, answer)
        assert INVALID[case][:1000] not in response.text  # the refusal does not echo a megabyte back
    assert await snapshot(api, admin, account_id) == before


@pytest.mark.parametrize("case", sorted(ODD))
async def test_odd_text_is_stored_exactly_or_refused_and_never_a_500(api: Api, case: str) -> None:
    admin = await api.admin()
    account_id, _ = await api.account(admin, enabled=False)
    value = ODD[case]
    for field, (method, path, body) in writes(account_id, value).items():
        if field in ("cookie", "id", "username"):  # structured values: refused (checked by the invalid test)
            before = await snapshot(api, admin, account_id)
            response = await admin.request(method, path, json=body)
            assert response.status_code < 500, (case, field, response.text[:300])
            if response.status_code >= 400:
                assert await snapshot(api, admin, account_id) == before, (case, field)
            continue
        response = await admin.request(method, path, json=body)
        assert response.status_code < 500, (case, field, response.text[:300])
        if response.status_code >= 400:
            assert field in str(response.json()), (case, field, response.text)
    remark = (await admin.get(f"/api/v1/accounts/{account_id}")).json()["remark"]
    assert remark == value  # stored exactly: no silent rewriting


async def test_html_in_every_field_is_escaped_in_the_web_admin(api: Api) -> None:
    name, owner = await api.user()
    account_id, seller = await api.account(owner)
    payload = ODD["html"]
    await owner.patch(f"/api/v1/accounts/{account_id}", json={"remark": payload})
    await owner.put(f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": payload, "reply": payload}])
    await owner.put(f"/api/v1/accounts/{account_id}/settings", json={"default_reply": payload})
    await api.running(owner, account_id)
    pushed = api.sim.push_message(seller["unb"], payload, buyer_nick=payload)
    from ..api.conftest import eventually

    await eventually(lambda: api.sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]), timeout=30)
    from .test_security import web_login

    browser = await web_login(api, name, PASSWORD)
    pages = [
        "/",
        f"/accounts/{account_id}",
        f"/accounts/{account_id}/chats",
        f"/accounts/{account_id}/chats/{pushed['chat_id']}",
    ]
    for page in pages:
        html = (await browser.get(page)).text
        assert "<script>alert" not in html and "<img src=x" not in html, page
    assert "&lt;script&gt;" in (await browser.get(f"/accounts/{account_id}")).text


async def test_a_catastrophic_regex_rule_answers_quickly(api: Api) -> None:
    admin = await api.admin()
    account_id, _ = await api.account(admin, enabled=False)
    saved = await admin.put(
        f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "(a+)+$", "reply": "hit", "match": "regex"}]
    )
    assert saved.status_code == 200, saved.text
    started = time.monotonic()
    tried = await admin.post(f"/api/v1/accounts/{account_id}/try", json={"text": "a" * 4000 + "!"})
    assert tried.status_code == 200 and tried.json()["reply"] is None  # no match, found without backtracking
    hit = await admin.post(f"/api/v1/accounts/{account_id}/try", json={"text": "b" + "a" * 4000})
    assert hit.status_code == 200 and hit.json()["reply"] == "hit"
    assert time.monotonic() - started < 10  # backtracking would take longer than the universe


async def test_the_engine_refuses_hostile_input_and_keeps_its_state(api: Api) -> None:
    """The scheduler behind the API (CLI and workers call it directly): same refusals, nothing changed."""
    engine = api.server.engine
    assert engine is not None
    admin = await api.admin()
    account_id, _ = await api.account(admin, enabled=False)
    store = api.server.store
    cookie = await store.get_account_cookie(account_id)
    for bad in INVALID.values():
        with pytest.raises(Exception) as caught:
            await engine.update_cookie(account_id, bad)
        assert bad[:100] not in str(caught.value)  # the refusal does not echo the value
    assert await store.get_account_cookie(account_id) == cookie


async def test_the_web_admins_forms_refuse_what_the_api_refuses_and_change_nothing(api: Api) -> None:
    """NUL (a form's `%00`) and lone surrogates (JSON's `\\ud800` in a rules import) get the API's refusal, as a
    message on the page (422, into the toast: the form keeps what was typed), and nothing is written."""
    from ..api.conftest import ADMIN, ADMIN_PASSWORD
    from .test_security import csrf_of, web_login

    admin = await api.admin()
    account_id, _ = await api.account(admin, enabled=False)
    before = await snapshot(api, admin, account_id)
    browser = await web_login(api, ADMIN, ADMIN_PASSWORD)
    htmx = {"X-CSRF-Token": csrf_of(browser), "HX-Request": "true"}
    nul = INVALID["NUL"]
    base = f"/accounts/{account_id}"
    forms: list[tuple[str, str, dict[str, str]]] = [
        ("POST", "/accounts", {"account_id": "web-nul", "cookie": f"unb=1; cookie2={nul}"}),
        ("POST", "/accounts", {"account_id": f"web{nul}", "cookie": "unb=1; cookie2=abc"}),
        ("POST", "/accounts", {"account_id": "web-remark", "cookie": "unb=1; cookie2=abc", "remark": nul}),
        ("PUT", f"{base}/cookie", {"cookie": f"unb=1; cookie2={nul}"}),
        ("PUT", f"{base}/settings", {"default_reply": nul}),
        ("PUT", f"{base}/ai", {"prompt": nul, "model": "m"}),
        ("PUT", f"{base}/rules", {"keyword": nul, "reply": "ok", "match": "contains"}),
        ("PUT", f"{base}/rules", {"keyword": "k", "reply": nul, "match": "contains"}),
        ("POST", f"{base}/try", {"text": nul}),
        ("POST", "/users", {"username": f"web{nul}", "password": PASSWORD, "role": "user"}),
    ]
    for method, path, data in forms:
        answer = await browser.request(method, path, data=data, headers=htmx)
        assert answer.status_code == 422, (path, data, answer.status_code, answer.text[:300])
        assert "must not contain NUL characters" in answer.text, (path, answer.text[:300])
        assert answer.headers.get("HX-Retarget") == "#toast", path
    for escaped in ("\\u0000", "\\ud800"):  # JSON escapes decode to exactly the text the store cannot keep
        pasted = '[{"keyword": "k' + escaped + '", "reply": "ok"}]'
        answer = await browser.put(f"{base}/rules/import", data={"rules_json": pasted}, headers=htmx)
        assert answer.status_code == 422 and "rule 1: keyword must" in answer.text, (escaped, answer.text[:300])
    page = api.client(follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', (await page.get("/login")).text)
    assert token is not None
    login = await page.post("/login", data={"username": f"a{nul}", "password": "x" * 8, "csrf_token": token[1]})
    assert login.status_code == 422 and "must not contain NUL characters" in login.text, login.text[:300]
    assert await snapshot(api, admin, account_id) == before
    clean = await browser.put(f"{base}/settings", data={"default_reply": "在的"}, headers=htmx)
    assert clean.status_code == 200, clean.text[:300]  # the same form without the NUL goes through
