"""Signing in: passwords, tokens, login throttling (never a lockout), the session cookie and its CSRF check, roles."""

from __future__ import annotations

from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
from fastapi import Response

from xianyu_autoreply.api import auth as auth_module
from xianyu_autoreply.api.auth import (
    CSRF_COOKIE,
    CSRF_HEADER,
    SESSION_COOKIE,
    bind_authenticator,
    issue_session_cookies,
    unbind_authenticator,
)

from .conftest import ADMIN, ADMIN_PASSWORD, PASSWORD, Api
from .throttling import client_at, own_throttle

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


TOKEN = "/api/v1/auth/token"


def _counting_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the argon2 checks the login makes from now on (one item per check)."""
    calls: list[int] = []
    real = auth_module.verify_password

    async def counting(password_hash: str, password: str) -> bool:
        calls.append(1)
        return await real(password_hash, password)

    monkeypatch.setattr(auth_module, "verify_password", counting)
    return calls


async def test_fifty_wrong_passwords_from_one_address_do_not_keep_the_owner_out(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    with own_throttle(api, free_failures=5, delay_base=1.0, delay_cap=60.0) as clock:
        attacker, owner = client_at(api, "203.0.113.66"), client_at(api, "198.51.100.1")
        verified = _counting_verifications(monkeypatch)
        answers = [
            (await attacker.post(TOKEN, data={"username": ADMIN, "password": f"guess-{i}"})).status_code
            for i in range(50)
        ]
        assert answers == [401] * 5 + [429] * 45
        assert len(verified) == 5  # a refused attempt is answered before any argon2 round
        right = await owner.post(TOKEN, data={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert right.status_code == 200, right.text
        # The attacker's address waits, even with the right password, until the delay has passed.
        refused = await attacker.post(TOKEN, data={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_attempts"
        assert "try again in 1 s" in refused.json()["message"]
        assert refused.headers["Retry-After"] == "1"
        clock.advance(0.5)
        assert (await attacker.post(TOKEN, data={"username": ADMIN, "password": ADMIN_PASSWORD})).status_code == 429
        clock.advance(0.5)
        assert (await attacker.post(TOKEN, data={"username": ADMIN, "password": ADMIN_PASSWORD})).status_code == 200


async def test_a_lock_left_in_the_database_does_not_refuse_the_right_password(api: Api) -> None:
    name, _ = await api.user()
    locked = await api.server.store.record_login_failure(name, lock_after=1, lock_for=timedelta(hours=1))
    assert locked.locked_until is not None  # as the lockout of earlier versions left it
    with own_throttle(api):
        answer = await client_at(api, "198.51.100.2").post(TOKEN, data={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    assert (await api.server.store.get_user(name)).locked_until is None


async def test_waits_double_after_the_free_failures_up_to_the_cap(api: Api) -> None:
    name, _ = await api.user()
    wrong = {"username": name, "password": "not-the-password"}
    with own_throttle(api, free_failures=2, delay_base=1.0, delay_cap=8.0) as clock:
        client = client_at(api, "203.0.113.10")
        assert [(await client.post(TOKEN, data=wrong)).status_code for _ in range(2)] == [401, 401]
        waits = []
        for _ in range(6):
            refused = await client.post(TOKEN, data=wrong)
            assert refused.status_code == 429
            waits.append(int(refused.headers["Retry-After"]))
            clock.advance(waits[-1])
            assert (await client.post(TOKEN, data=wrong)).status_code == 401
        assert waits == [1, 2, 4, 8, 8, 8]


async def test_a_success_starts_the_pair_over(api: Api) -> None:
    name, _ = await api.user()
    with own_throttle(api, free_failures=2, delay_base=5.0, delay_cap=60.0) as clock:
        client = client_at(api, "203.0.113.11")
        for _ in range(2):
            assert (await client.post(TOKEN, data={"username": name, "password": "wrong-one"})).status_code == 401
        assert (await client.post(TOKEN, data={"username": name, "password": PASSWORD})).status_code == 429
        clock.advance(5)
        assert (await client.post(TOKEN, data={"username": name, "password": PASSWORD})).status_code == 200
        for _ in range(2):  # the free failures are back
            assert (await client.post(TOKEN, data={"username": name, "password": "wrong-one"})).status_code == 401
        assert (await client.post(TOKEN, data={"username": name, "password": "wrong-one"})).status_code == 429


async def test_a_sweep_of_usernames_from_one_address_is_slowed_by_its_budget(api: Api) -> None:
    with own_throttle(api, free_failures=5, address_failures=4, delay_base=2.0, delay_cap=60.0) as clock:
        sweeper = client_at(api, "203.0.113.12")
        for i in range(4):
            wrong = await sweeper.post(TOKEN, data={"username": f"ghost{i}", "password": "x" * 8})
            assert wrong.status_code == 401
        refused = await sweeper.post(TOKEN, data={"username": ADMIN, "password": ADMIN_PASSWORD})
        assert refused.status_code == 429
        assert refused.json()["code"] == "too_many_attempts"
        assert "from this address" in refused.json()["message"]
        assert refused.headers["Retry-After"] == "2"
        # Another address is not slowed by this one's sweep.
        other = client_at(api, "203.0.113.13")
        assert (await other.post(TOKEN, data={"username": "ghost0", "password": "x" * 8})).status_code == 401
        clock.advance(2)
        assert (await sweeper.post(TOKEN, data={"username": "ghost9", "password": "x" * 8})).status_code == 401
        again = await sweeper.post(TOKEN, data={"username": "ghost10", "password": "x" * 8})
        assert again.status_code == 429 and again.headers["Retry-After"] == "4"


async def test_a_guess_spread_over_many_addresses_slows_them_but_not_the_owner(api: Api) -> None:
    name, _ = await api.user()
    with own_throttle(api, free_failures=5, user_failures=6, delay_base=3.0, delay_cap=60.0):
        guessers = [client_at(api, f"192.0.2.{i}") for i in range(1, 7)]
        for guesser in guessers:
            assert (await guesser.post(TOKEN, data={"username": name, "password": "guess-one"})).status_code == 401
        assert api.server.app.state.auth.throttle.under_attack(name)
        # Under attack, an address that has failed for this user has no free failures left...
        second = await guessers[0].post(TOKEN, data={"username": name, "password": "guess-two"})
        assert second.status_code == 429 and second.headers["Retry-After"] == "3"
        # ...while an address that has not failed for it still signs in at once.
        owner = client_at(api, "198.51.100.3")
        assert (await owner.post(TOKEN, data={"username": name, "password": PASSWORD})).status_code == 200


async def test_every_failed_and_successful_login_is_audited(api: Api) -> None:
    name, _ = await api.user()
    nobody = f"{name}-nobody"
    store = api.server.store
    with own_throttle(api):
        client = client_at(api, "203.0.113.14")
        for _ in range(2):
            assert (await client.post(TOKEN, data={"username": name, "password": "wrong-pass"})).status_code == 401
        assert (await store.get_user(name)).failed_logins == 2  # wrong passwords since the last login
        assert (await client.post(TOKEN, data={"username": nobody, "password": "whatever1"})).status_code == 401
        assert (await client.post(TOKEN, data={"username": name, "password": PASSWORD})).status_code == 200
    audit = await store.list_audit(limit=50)
    logins = [
        e for e in reversed(audit) if e.action.startswith("user.login") and e.detail["username"] in (name, nobody)
    ]
    assert [(e.action, e.actor, e.detail["username"]) for e in logins] == [
        ("user.login_failed", "anonymous", name),
        ("user.login_failed", "anonymous", name),
        ("user.login_failed", "anonymous", nobody),
        ("user.login", name, name),
    ]
    assert all(e.detail["client"] == "203.0.113.14" for e in logins)
    assert [e.detail.get("failed_logins") for e in logins[:2]] == [1, 2]
    assert logins[2].detail["known"] is False
    user = await store.get_user(name)
    assert user.failed_logins == 0 and user.last_login_at is not None


async def test_behind_the_loopback_proxy_each_forwarded_client_is_throttled_on_its_own(api: Api) -> None:
    # The service itself (uvicorn) takes the client from X-Forwarded-For when the peer is a trusted proxy,
    # loopback by default (FORWARDED_ALLOW_IPS): one client's failures do not slow the others behind the proxy.
    name, _ = await api.user()
    with own_throttle(api, free_failures=1, delay_base=30.0):
        proxy = api.client()
        wrong, right = {"username": name, "password": "wrong-pass"}, {"username": name, "password": PASSWORD}
        first, second = {"X-Forwarded-For": "198.51.100.20"}, {"X-Forwarded-For": "198.51.100.21"}
        assert (await proxy.post(TOKEN, data=wrong, headers=first)).status_code == 401
        assert (await proxy.post(TOKEN, data=right, headers=first)).status_code == 429
        assert (await proxy.post(TOKEN, data=right, headers=second)).status_code == 200


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
