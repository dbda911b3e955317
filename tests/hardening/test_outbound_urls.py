"""SSRF at save time: every URL an owner chooses (proxy, AI base URL, webhook rule, notification URL) that the
outbound policy refuses is a 422 naming the field and why, through the REST API and the web admin, and nothing
is written. The service under test opens 127.0.0.1 only (`outbound.allow=["127.0.0.1/32"]`, tests/api/conftest.py).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from xianyu_autoreply import outbound

from ..api.conftest import PASSWORD, Api
from .test_security import csrf_of, web_login

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRIVATE = "10.0.0.5 is a private address; an administrator can allow it with XAR_OUTBOUND__ALLOW"


async def snapshot(api: Api, client: httpx.AsyncClient, account_id: str) -> dict[str, Any]:
    """What a refused write could have changed: the account (version, proxy), settings, delivery rules."""
    account = (await client.get(f"/api/v1/accounts/{account_id}")).json()
    account.pop("state")
    secrets = await api.server.store.get_account_secrets(account_id)
    return {
        "account": account,
        "proxy": secrets.proxy,
        "settings": (await client.get(f"/api/v1/accounts/{account_id}/settings")).json(),
        "delivery": (
            await client.get(f"/api/v1/accounts/{account_id}/delivery-rules", params={"reveal": "true"})
        ).json(),
    }


def refused(response: httpx.Response, field: str, reason: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "url_not_allowed" and body["field"] == field, body
    assert body["message"] == f"{field}: {reason}", body


async def test_a_refused_proxy_creates_no_account(api: Api) -> None:
    _, client = await api.user()
    seller = api.sim.create_seller()
    body = {"id": api.unique("ssrf"), "cookie": seller["cookie"], "proxy": "socks5://user:pw@10.0.0.5:1080"}
    response = await client.post("/api/v1/accounts", json=body)
    refused(response, "proxy", PRIVATE)
    assert "pw" not in response.text
    assert (await client.get(f"/api/v1/accounts/{body['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        ("http://127.0.0.2:3128", "127.0.0.2 is a loopback address"),  # loopback, but not the allowlisted one
        ("socks5://169.254.169.254:1080", "169.254.169.254 is a cloud metadata address"),
        ("socks4://proxy.example:1080", "socks4: URLs are not allowed here"),
    ],
)
async def test_a_refused_proxy_in_a_patch_changes_nothing_not_even_the_other_fields(
    api: Api, proxy: str, reason: str
) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    before = await snapshot(api, client, account_id)
    response = await client.patch(f"/api/v1/accounts/{account_id}", json={"remark": "changed", "proxy": proxy})
    assert response.status_code == 422 and response.json()["field"] == "proxy", response.text
    assert response.json()["message"].startswith(f"proxy: {reason}")
    assert await snapshot(api, client, account_id) == before


async def test_a_refused_ai_base_url_leaves_the_settings_as_they_were(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    before = await snapshot(api, client, account_id)
    body = {"default_reply": "new default", "ai": {"enabled": True, "base_url": "http://10.0.0.5/v1", "model": "m"}}
    refused(await client.put(f"/api/v1/accounts/{account_id}/settings", json=body), "ai.base_url", PRIVATE)
    for url in ("file:///etc/passwd", "http://[::ffff:10.0.0.5]/v1", "http://metadata.google.internal/v1"):
        body["ai"]["base_url"] = url
        response = await client.put(f"/api/v1/accounts/{account_id}/settings", json=body)
        assert response.status_code == 422 and response.json()["field"] == "ai.base_url", response.text
    assert await snapshot(api, client, account_id) == before


async def test_a_refused_webhook_rule_leaves_the_rules_as_they_were(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    path = f"/api/v1/accounts/{account_id}/delivery-rules"
    kept = await client.put(path, json=[{"kind": "text", "content": "goods"}])
    assert kept.status_code == 200, kept.text
    before = await snapshot(api, client, account_id)
    rules = [{"kind": "text", "content": "other goods"}, {"kind": "webhook", "content": "http://10.0.0.5/hook?token=x"}]
    response = await client.put(path, json=rules)
    refused(response, "1.content", PRIVATE)
    assert "token" not in response.json()["message"]
    gopher = [{"kind": "webhook", "content": "gopher://127.0.0.1:6379/_FLUSHALL"}]
    refused(await client.put(path, json=gopher), "0.content", "gopher: URLs are not allowed here; use http or https")
    # Turning the kept text rule into a webhook keeps its content: that content is checked as the URL.
    (text,) = before["delivery"]
    await client.put(path, json=[{"kind": "text", "content": "http://10.0.0.5/", "id": text["id"]}])
    before = await snapshot(api, client, account_id)
    refused(await client.put(path, json=[{"kind": "webhook", "id": text["id"]}]), "0.content", PRIVATE)
    assert await snapshot(api, client, account_id) == before


async def test_a_refused_notification_url_leaves_the_notification_settings_as_they_were(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answers(host: str, port: int) -> list[str]:
        return {"hooks.example": ["93.184.215.14"], "rebound.example": ["127.0.0.2"]}[host]

    monkeypatch.setattr(outbound, "system_resolver", answers)
    name, client = await api.user()
    saved = {"urls": ["tgram://123456:TOKEN/987654", "json://hooks.example/notify"], "events": ["order_paid"]}
    assert (await client.put("/api/v1/notifications", json=saved)).status_code == 200
    cases = {
        "file:///etc/passwd": "file:// notifications are not supported here",
        "dbus://": "dbus:// notifications are not supported here",
        "json://10.0.0.5/notify": PRIVATE,
        "mailtos://u:p@example.org?smtp=169.254.169.254": "169.254.169.254 is a cloud metadata address",
        "jsons://rebound.example/notify": "rebound.example resolves to 127.0.0.2, which is a loopback address",
    }
    for url, reason in cases.items():
        response = await client.put("/api/v1/notifications", json={"urls": [saved["urls"][0], url], "events": []})
        assert response.status_code == 422, (url, response.text)
        body = response.json()
        assert body["code"] == "url_not_allowed" and body["field"] == "urls.1", body
        assert body["message"].startswith(f"urls.1: {reason}"), body
    assert await api.server.store.get_notification_urls(name) == saved["urls"]
    assert (await client.get("/api/v1/notifications")).json()["events"] == ["order_paid"]


async def test_allowed_urls_save_and_a_name_that_does_not_resolve_now_is_checked_when_used(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False, proxy="http://127.0.0.1:3128")  # the allowlisted one
    assert (await api.server.store.get_account_secrets(account_id)).proxy == "http://127.0.0.1:3128"
    # No DNS in tests: the name does not resolve, so it is saved, and the delivery checks it again.
    rules = [{"kind": "webhook", "content": "https://hooks.example/deliver"}]
    saved = await client.put(f"/api/v1/accounts/{account_id}/delivery-rules", json=rules)
    assert saved.status_code == 200, saved.text


async def test_the_web_admin_ai_form_refuses_a_forbidden_base_url_and_saves_nothing(api: Api) -> None:
    name, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    before = await snapshot(api, client, account_id)
    browser = await web_login(api, name, PASSWORD)
    form = {"enabled": "on", "base_url": "http://10.0.0.5/v1", "model": "m", "prompt": "hi"}
    headers = {"X-CSRF-Token": csrf_of(browser), "HX-Request": "true"}
    response = await browser.put(f"/accounts/{account_id}/ai", data=form, headers=headers)
    assert response.status_code == 422, response.text
    assert f"ai.base_url: {PRIVATE}" in response.text
    assert await snapshot(api, client, account_id) == before
