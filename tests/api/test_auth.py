"""Signing in: passwords, tokens, lockout and throttling, the session cookie and its CSRF check, roles."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from fastapi import Response

from xianyu_autoreply.api.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    LoginThrottle,
    bind_authenticator,
    issue_session_cookies,
    unbind_authenticator,
)

from .conftest import ADMIN, ADMIN_PASSWORD, PASSWORD, Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_first_admin_from_the_settings_can_sign_in(api: Api) -> None:
    client = await api.admin()
    me = await client.get("/api/v1/auth/me")
    assert me.status_code == 200
    assert me.json()["username"] == ADMIN and me.json()["role"] == "admin"


async def test_a_wrong_password_is_401_with_a_stable_code(api: Api) -> None:
    response = await api.client().post("/api/v1/auth/token", data={"username": ADMIN, "password": "wrong-password"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


async def test_an_unknown_user_gets_the_same_answer_as_a_wrong_password(api: Api) -> None:
    response = await api.client().post("/api/v1/auth/token", data={"username": "nobody", "password": "whatever1"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


async def test_a_login_without_the_password_field_is_422_naming_it(api: Api) -> None:
    response = await api.client().post("/api/v1/auth/token", data={"username": ADMIN})
    assert response.status_code == 422
    assert response.json()["field"] == "password"


async def test_every_api_route_needs_a_sign_in(api: Api) -> None:
    client = api.client()
    for method, path in [
        ("GET", "/api/v1/accounts"),
        ("POST", "/api/v1/accounts"),
        ("GET", "/api/v1/accounts/x/state"),
        ("PUT", "/api/v1/accounts/x/rules"),
        ("POST", "/api/v1/accounts/bulk"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/notifications"),
        ("GET", "/api/v1/events"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.json()["code"] == "not_authenticated"


async def test_an_expired_token_is_refused(api: Api) -> None:
    auth = api.server.app.state.auth
    user = await api.server.store.get_user(ADMIN)
    expired = auth.issue_token(user, ttl=-60)
    response = await api.client(headers={"Authorization": f"Bearer {expired}"}).get("/api/v1/accounts")
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


async def test_a_tampered_token_is_refused(api: Api) -> None:
    token = await api.token(ADMIN, ADMIN_PASSWORD)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    response = await api.client(headers={"Authorization": f"Bearer {forged}"}).get("/api/v1/accounts")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


async def test_repeated_wrong_passwords_lock_the_user_even_for_the_right_one(api: Api) -> None:
    name, _ = await api.user()
    client = api.client()
    limit = api.server.settings.api.login_max_failures
    for _ in range(limit):
        wrong = await client.post("/api/v1/auth/token", data={"username": name, "password": "not-the-password"})
        assert wrong.status_code == 401
    right = await client.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
    assert right.status_code == 429
    assert right.json()["code"] == "login_locked"
    assert int(right.headers["Retry-After"]) > 0
    admin = await api.admin()
    listed = {u["username"]: u for u in (await admin.get("/api/v1/users")).json()}
    assert listed[name]["locked_until"] is not None
    # An admin setting a new password unlocks the user.
    await admin.patch(f"/api/v1/users/{name}", json={"password": "fresh-password-1"})
    assert (await client.post("/api/v1/auth/token", data={"username": name, "password": "fresh-password-1"})).is_success


async def test_many_failed_logins_from_one_address_are_throttled(api: Api) -> None:
    auth = api.server.app.state.auth
    saved = auth.throttle
    auth.throttle = LoginThrottle(3)
    try:
        client = api.client()
        for i in range(3):
            wrong = await client.post("/api/v1/auth/token", data={"username": f"ghost{i}", "password": "x" * 8})
            assert wrong.status_code == 401
        refused = await client.post("/api/v1/auth/token", data={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_attempts"
    finally:
        auth.throttle = saved


async def test_a_new_password_voids_tokens_issued_before(api: Api) -> None:
    name, client = await api.user()
    assert (await client.get("/api/v1/accounts")).status_code == 200
    admin = await api.admin()
    assert (await admin.patch(f"/api/v1/users/{name}", json={"password": "another-password"})).status_code == 200
    response = await client.get("/api/v1/accounts")
    assert response.status_code == 401
    assert response.json()["code"] == "token_revoked"


async def test_a_disabled_user_cannot_sign_in_or_use_old_tokens(api: Api) -> None:
    name, client = await api.user()
    admin = await api.admin()
    assert (await admin.patch(f"/api/v1/users/{name}", json={"disabled": True})).json()["disabled"] is True
    assert (await client.get("/api/v1/accounts")).status_code == 401
    login = await api.client().post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
    assert login.status_code == 401


async def _session_cookies(api: Api, username: str) -> tuple[dict[str, str], str, str]:
    """What the web admin's login form sets: cookies (as a browser keeps them), the Set-Cookie header, csrf."""
    user = await api.server.store.get_user(username)
    response = Response()
    token = bind_authenticator(api.server.app.state.auth)
    try:
        csrf = issue_session_cookies(response, user)
    finally:
        unbind_authenticator(token)
    headers = [value.decode() for name, value in response.raw_headers if name == b"set-cookie"]
    jar: SimpleCookie = SimpleCookie()
    for header in headers:
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}, "\n".join(headers), csrf


async def test_the_session_cookie_is_httponly_and_samesite(api: Api) -> None:
    _, headers, _ = await _session_cookies(api, ADMIN)
    session = next(line for line in headers.splitlines() if line.startswith(f"{SESSION_COOKIE}="))
    csrf = next(line for line in headers.splitlines() if line.startswith(f"{CSRF_COOKIE}="))
    assert "HttpOnly" in session and "SameSite=lax" in session
    assert "HttpOnly" not in csrf  # the page reads it to send it back


async def test_the_session_cookie_reads_without_csrf_but_writes_need_the_header(api: Api) -> None:
    name, _ = await api.user()
    cookies, _, csrf = await _session_cookies(api, name)
    browser = api.client(cookies=cookies)
    assert (await browser.get("/api/v1/accounts")).status_code == 200
    body = {"urls": [], "events": ["order.paid"]}
    refused = await browser.put("/api/v1/notifications", json=body)
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_failed"
    wrong = await browser.put("/api/v1/notifications", json=body, headers={CSRF_HEADER: "guess"})
    assert wrong.status_code == 403
    accepted = await browser.put("/api/v1/notifications", json=body, headers={CSRF_HEADER: csrf})
    assert accepted.status_code == 200


async def test_a_planted_csrf_cookie_does_not_pass_the_check(api: Api) -> None:
    name, _ = await api.user()
    cookies, _, _ = await _session_cookies(api, name)
    planted = {**cookies, CSRF_COOKIE: "attacker"}
    browser = api.client(cookies=planted)
    response = await browser.put(
        "/api/v1/notifications", json={"urls": [], "events": []}, headers={CSRF_HEADER: "attacker"}
    )
    assert response.status_code == 403


async def test_a_user_may_not_manage_users(api: Api) -> None:
    _, client = await api.user()
    response = await client.get("/api/v1/users")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    created = await client.post("/api/v1/users", json={"username": "x1", "password": PASSWORD})
    assert created.status_code == 403
