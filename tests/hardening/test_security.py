"""Security properties of the running service: headers and CSRF on the web admin, throttling of the web login,
encryption at rest on the raw SQLite bytes, and secrets never in logs, error messages, API answers or exports."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import structlog

from xianyu_autoreply.api.web.i18n import DEFAULT_LANG, translator
from xianyu_autoreply.log import redact_secrets

from ..api.conftest import ADMIN, ADMIN_PASSWORD, PASSWORD, Api, eventually
from ..api.throttling import client_at, own_throttle

pytestmark = pytest.mark.asyncio(loop_scope="module")

AI_KEY = "sk-hardening-0123456789abcdefSECRETKEY"
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


async def web_login(api: Api, username: str, password: str) -> httpx.AsyncClient:
    """A browser-like client signed in through the web admin's login form (its cookies kept)."""
    browser = api.client(follow_redirects=False)
    page = await browser.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None, page.text
    answer = await browser.post(
        "/login", data={"username": username, "password": password, "csrf_token": token.group(1), "next": "/"}
    )
    assert answer.status_code == 303, answer.text
    return browser


def csrf_of(browser: httpx.AsyncClient) -> str:
    return str(browser.cookies.get("xar_csrf"))


def cookie_secrets(cookie: str) -> list[str]:
    """The values of a simulator cookie that grant access (every value but the public seller id)."""
    pairs = (part.strip().split("=", 1) for part in cookie.split(";") if "=" in part)
    return [value for name, value in pairs if name != "unb" and len(value) > 8]


# --- headers and CSRF -----------------------------------------------------------------------------------------


async def test_pages_fragments_errors_and_static_files_carry_the_security_headers(api: Api) -> None:
    browser = await web_login(api, ADMIN, ADMIN_PASSWORD)
    account_id, _ = await api.account(await api.admin())
    answers = {
        "login page": await api.client().get("/login"),
        "dashboard": await browser.get("/"),
        "account page": await browser.get(f"/accounts/{account_id}"),
        "missing account page": await browser.get("/accounts/nope"),
        "fragment": await browser.get("/web/dashboard/rows"),
        "action without sign-in": await api.client().post("/accounts", data={"account_id": "x"}),
        "action without CSRF": await browser.post("/accounts", data={"account_id": "x"}),
        "static file": await api.client().get("/static/admin.js"),
        "api answer": await (await api.admin()).get("/api/v1/accounts"),
        "api error": await api.client().get("/api/v1/accounts"),
    }
    for what, response in answers.items():
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (what, response.status_code, dict(response.headers))
    for what in ("login page", "dashboard", "account page"):
        assert "frame-ancestors 'none'" in answers[what].headers["Content-Security-Policy"], what


async def test_web_actions_without_the_csrf_header_are_refused_and_change_nothing(api: Api) -> None:
    name, owner = await api.user()
    account_id, _ = await api.account(owner)
    browser = await web_login(api, name, PASSWORD)
    seller = api.sim.create_seller()
    for method, path, data in [
        ("POST", "/accounts", {"account_id": "csrf-victim", "cookie": seller["cookie"]}),
        ("DELETE", f"/accounts/{account_id}", None),
        ("POST", "/accounts/bulk", {"action": "delete", "ids": account_id}),
    ]:
        for headers in ({}, {"X-CSRF-Token": "guessed"}):
            refused = await browser.request(method, path, data=data, headers=headers)
            assert refused.status_code == 403, (method, path, refused.status_code, refused.text[:200])
    assert [a["id"] for a in (await owner.get("/api/v1/accounts")).json()] == [account_id]
    # The same action with the header goes through: the refusal was the CSRF check, not something else.
    ok = await browser.delete(f"/accounts/{account_id}", headers={"X-CSRF-Token": csrf_of(browser)})
    assert ok.status_code < 400, ok.text
    assert (await owner.get("/api/v1/accounts")).json() == []


async def test_a_login_form_posted_without_its_token_is_refused(api: Api) -> None:
    answer = await api.client().post("/login", data={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert answer.status_code == 403
    assert "xar_session" not in answer.headers.get("set-cookie", "")


async def test_the_web_login_is_throttled_like_the_api_and_never_locks_the_owner_out(api: Api) -> None:
    name, _ = await api.user()
    with own_throttle(api, free_failures=3, delay_base=10.0, delay_cap=60.0) as clock:
        browser = client_at(api, "203.0.113.90", follow_redirects=False)
        page = await browser.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        for _ in range(3):
            wrong = await browser.post(
                "/login", data={"username": name, "password": "nope-nope", "csrf_token": token[1]}
            )
            assert wrong.status_code == 401
        right = await browser.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token[1]})
        assert right.status_code == 429
        assert right.headers["Retry-After"] == "10"
        assert translator(DEFAULT_LANG)("login.locked") in right.text
        assert "xar_session" not in right.headers.get("set-cookie", "")
        # One throttle for both doors: the API refuses this address too...
        same = client_at(api, "203.0.113.90")
        assert (await same.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})).status_code == 429
        # ...but not the owner at another address, through either door.
        owner = client_at(api, "198.51.100.90")
        assert (
            await owner.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
        ).status_code == 200
        clock.advance(10)
        signed_in = await browser.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token[1]})
        assert signed_in.status_code == 303
        assert "xar_session" in signed_in.headers.get("set-cookie", "")


# --- secrets --------------------------------------------------------------------------------------------------


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Everything structlog and the standard library log, rendered through the production processors."""
    sink = io.StringIO()
    saved = structlog.get_config()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),  # stricter than production
        logger_factory=structlog.PrintLoggerFactory(sink),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # the production level (log.configure_logging)
    try:
        yield sink
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        structlog.configure(**saved)


async def test_secrets_never_reach_logs_errors_answers_or_exports(api: Api) -> None:
    """A whole scenario (accounts, bad cookies, AI key, replies, faults, a failing AI, exports), then a grep."""
    with captured_logs() as logs:
        name, owner = await api.user()
        account_id, seller = await api.account(owner)
        await api.running(owner, account_id)
        ai = {"enabled": True, "base_url": api.sim.openai_url, "model": "m", "api_key": AI_KEY}
        assert (await owner.put(f"/api/v1/accounts/{account_id}/settings", json={"ai": ai})).status_code == 200
        assert (
            await owner.put(f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "价", "reply": "9"}])
        ).is_success
        pushed = api.sim.push_message(seller["unb"], "在吗，多少钱")
        await eventually(lambda: api.sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]), timeout=30)
        api.sim.set_ai(status=500)  # the AI fails: its error must not carry the key
        api.sim.push_message(seller["unb"], "可以便宜点吗")
        # A wrong cookie (another seller's) and a broken one: refusals must not echo them.
        other = api.sim.create_seller()
        for bad in (other["cookie"], seller["cookie"] + "; cookie2=" + "z" * 40 + "\x00"):
            refused = await owner.put(f"/api/v1/accounts/{account_id}/cookie", json={"cookie": bad})
            assert refused.status_code in (400, 409, 422), refused.text
        api.sim.set_fault("expire_token", seller=seller["unb"])
        api.sim.set_fault("drop", seller=seller["unb"])
        await api.running(owner, account_id)
        bad_login = await api.client().post(
            "/api/v1/auth/token", data={"username": name, "password": "Wr0ng-" + PASSWORD}
        )
        assert bad_login.status_code == 401
        browser = await web_login(api, name, PASSWORD)
        exported = await browser.get(f"/accounts/{account_id}/rules.json")
        assert exported.status_code == 200
        api.seen.append(exported.text)
        page = await browser.get(f"/accounts/{account_id}")
        api.seen.append(page.text)
        api.sim.reset_ai()
    text = logs.getvalue()
    assert "engine" in text or account_id in text, "the scenario logged nothing: the capture is not working"
    secrets = [*cookie_secrets(seller["cookie"]), *cookie_secrets(other["cookie"]), AI_KEY, PASSWORD]
    for secret in secrets:
        assert secret not in text, f"secret in logs: {secret[:6]}..."
        for body in api.seen:
            assert secret not in body, f"secret in an answer: {secret[:6]}..."


async def test_cookies_and_ai_keys_are_encrypted_in_the_database_file(api: Api) -> None:
    _, owner = await api.user()
    account_id, seller = await api.account(owner)
    ai = {"enabled": False, "base_url": api.sim.openai_url, "model": "m", "api_key": AI_KEY}
    assert (await owner.put(f"/api/v1/accounts/{account_id}/settings", json={"ai": ai})).status_code == 200
    url = api.server.settings.database_url
    db_file = Path(url.split("///", 1)[1])
    raw = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))  # the file and its WAL
    assert account_id.encode() in raw  # the file really is the service's database
    for secret in [*cookie_secrets(seller["cookie"]), AI_KEY]:
        assert secret.encode() not in raw, f"plaintext secret in the database file: {secret[:6]}..."
