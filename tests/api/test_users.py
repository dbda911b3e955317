"""Users (admin only) and each user's own notification settings."""

from __future__ import annotations

import pytest

from .conftest import ADMIN, PASSWORD, Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_an_admin_creates_a_user_who_can_then_sign_in(api: Api) -> None:
    admin = await api.admin()
    created = await admin.post("/api/v1/users", json={"username": "staff1", "password": PASSWORD})
    assert created.status_code == 201
    assert created.json()["role"] == "user" and "password" not in created.text
    staff = await api.login("staff1", PASSWORD)
    assert (await staff.get("/api/v1/auth/me")).json()["username"] == "staff1"
    names = [u["username"] for u in (await admin.get("/api/v1/users")).json()]
    assert ADMIN in names and "staff1" in names


async def test_a_taken_username_is_409(api: Api) -> None:
    admin = await api.admin()
    name, _ = await api.user()
    response = await admin.post("/api/v1/users", json={"username": name, "password": PASSWORD})
    assert response.status_code == 409


async def test_bad_user_bodies_are_422_naming_the_field(api: Api) -> None:
    admin = await api.admin()
    short = await admin.post("/api/v1/users", json={"username": "u-short", "password": "short"})
    assert short.status_code == 422 and short.json()["field"] == "password"
    role = await admin.post("/api/v1/users", json={"username": "u-role", "password": PASSWORD, "role": "boss"})
    assert role.status_code == 422 and role.json()["field"] == "role"
    name = await admin.post("/api/v1/users", json={"username": "has space", "password": PASSWORD})
    assert name.status_code == 422 and name.json()["field"] == "username"
    patch = await admin.patch(f"/api/v1/users/{ADMIN}", json={"disabled": "sometimes"})
    assert patch.status_code == 422 and patch.json()["field"] == "disabled"


async def test_an_admin_promotes_a_user_who_then_sees_every_account(api: Api) -> None:
    name, client = await api.user()
    _, other = await api.user()
    account_id, _ = await api.account(other, enabled=False)
    assert (await client.get(f"/api/v1/accounts/{account_id}")).status_code == 404
    admin = await api.admin()
    promoted = await admin.patch(f"/api/v1/users/{name}", json={"role": "admin"})
    assert promoted.json()["role"] == "admin"
    assert (await client.get(f"/api/v1/accounts/{account_id}")).status_code == 200


async def test_the_last_admin_cannot_be_demoted_or_deleted(api: Api) -> None:
    admin = await api.admin()
    admins = [u for u in (await admin.get("/api/v1/users")).json() if u["role"] == "admin" and not u["disabled"]]
    if len(admins) > 1:  # other tests promoted users: demote them first so ADMIN is the last
        for user in admins:
            if user["username"] != ADMIN:
                await admin.patch(f"/api/v1/users/{user['username']}", json={"role": "user"})
    demote = await admin.patch(f"/api/v1/users/{ADMIN}", json={"role": "user"})
    assert demote.status_code == 409 and demote.json()["code"] == "last_admin"
    delete = await admin.delete(f"/api/v1/users/{ADMIN}")
    assert delete.status_code == 409 and delete.json()["code"] == "last_admin"


async def test_a_user_is_deleted_only_once_they_own_no_account(api: Api) -> None:
    name, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    admin = await api.admin()
    refused = await admin.delete(f"/api/v1/users/{name}")
    assert refused.status_code == 409
    await client.delete(f"/api/v1/accounts/{account_id}")
    assert (await admin.delete(f"/api/v1/users/{name}")).status_code == 204
    missing = await admin.delete(f"/api/v1/users/{name}")
    assert missing.status_code == 404 and missing.json()["code"] == "user_not_found"


async def test_notifications_are_per_user_and_urls_are_masked(api: Api) -> None:
    _, alice = await api.user()
    _, bob = await api.user()
    url = "tgram://123456:SECRET-BOT-TOKEN/987654"
    saved = await alice.put("/api/v1/notifications", json={"urls": [url], "events": ["order.paid", "stock.low"]})
    assert saved.status_code == 200
    shown = await alice.get("/api/v1/notifications")
    for response in (saved, shown):
        assert "SECRET-BOT-TOKEN" not in response.text
    assert shown.json()["events"] == ["order.paid", "stock.low"]
    assert shown.json()["urls"][0].startswith("tgram://")
    revealed = await alice.get("/api/v1/notifications", params={"reveal": "true"})
    assert revealed.json()["urls"] == [url]
    assert (await bob.get("/api/v1/notifications")).json() == {"urls": [], "events": []}


async def test_bad_notification_bodies_are_422_naming_the_field(api: Api) -> None:
    _, client = await api.user()
    response = await client.put("/api/v1/notifications", json={"urls": "not-a-list"})
    assert response.status_code == 422 and response.json()["field"] == "urls"
