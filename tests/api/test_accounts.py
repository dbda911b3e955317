"""Accounts over HTTP: CRUD, cookie replace, start/stop, live state, rules, settings, log, orders, delivery,
try, manual replies and bulk actions; ownership (404 across users) and 422s that name the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Api, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


def cookie_values(seller: dict[str, Any]) -> list[str]:
    """The secret parts of a simulator cookie (every value but the seller id)."""
    pairs = (part.strip().split("=", 1) for part in seller["cookie"].split(";"))
    return [value for name, value in pairs if name != "unb" and len(value) > 8]


def open_connections(api: Api, seller: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in api.sim.connections(seller=seller["unb"]) if not c["closed_ms"]]


def connection_ids(api: Api, seller: dict[str, Any]) -> list[Any]:
    """Which connections of the seller are open at the simulator (their counters left out: they keep moving)."""
    return [c["id"] for c in open_connections(api, seller)]


async def assert_422(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field, body
    assert field.rsplit(".", maxsplit=1)[-1] in body["message"]


# --- create, read, ownership ----------------------------------------------------------------------------------


async def test_an_added_account_starts_and_its_state_says_running(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client, remark="店铺一")
    state = await api.running(client, account_id)
    assert set(state) == {
        "lifecycle",
        "connection",
        "since",
        "last_error",
        "reconnects",
        "messages_in",
        "replies_out",
        "node",
    }
    assert state["node"] is None, "one process runs everything: no worker to name"
    assert len(open_connections(api, seller)) == 1
    account = (await client.get(f"/api/v1/accounts/{account_id}")).json()
    assert account["remark"] == "店铺一" and account["enabled"] is True
    assert account["seller_id"] == seller["unb"]
    assert account["state"]["lifecycle"] == "running"


async def test_the_cookie_is_shown_masked_only(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    listed = await client.get("/api/v1/accounts")
    one = await client.get(f"/api/v1/accounts/{account_id}")
    for text in (listed.text, one.text):
        assert seller["unb"] in text
        for secret in cookie_values(seller):
            assert secret not in text
    assert "***" in one.json()["cookie"]


async def test_a_user_sees_only_their_accounts_and_an_admin_sees_all(api: Api) -> None:
    _, alice = await api.user()
    _, bob = await api.user()
    a_id, _ = await api.account(alice)
    b_id, _ = await api.account(bob)
    assert [a["id"] for a in (await alice.get("/api/v1/accounts")).json()] == [a_id]
    assert [a["id"] for a in (await bob.get("/api/v1/accounts")).json()] == [b_id]
    everything = {a["id"] for a in (await (await api.admin()).get("/api/v1/accounts")).json()}
    assert {a_id, b_id} <= everything


async def test_another_users_account_is_404_exactly_like_a_missing_one(api: Api) -> None:
    _, alice = await api.user()
    _, bob = await api.user()
    a_id, _ = await api.account(alice)
    missing = await bob.get("/api/v1/accounts/does-not-exist")
    for method, path, body in [
        ("GET", f"/api/v1/accounts/{a_id}", None),
        ("GET", f"/api/v1/accounts/{a_id}/state", None),
        ("GET", f"/api/v1/accounts/{a_id}/rules", None),
        ("GET", f"/api/v1/accounts/{a_id}/messages", None),
        ("GET", f"/api/v1/accounts/{a_id}/orders", None),
        ("GET", f"/api/v1/accounts/{a_id}/delivery-rules", None),
        ("PUT", f"/api/v1/accounts/{a_id}/status", {"enabled": False}),
        ("PUT", f"/api/v1/accounts/{a_id}/rules", []),
        ("PATCH", f"/api/v1/accounts/{a_id}", {"remark": "mine now"}),
        ("POST", f"/api/v1/accounts/{a_id}/try", {"text": "hi"}),
        ("DELETE", f"/api/v1/accounts/{a_id}", None),
    ]:
        response = await bob.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == missing.json()
    assert (await alice.get(f"/api/v1/accounts/{a_id}")).json()["remark"] == ""


async def test_adding_an_account_twice_is_409(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    again = await client.post("/api/v1/accounts", json={"id": account_id, "cookie": seller["cookie"]})
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


async def test_bad_account_bodies_are_422_naming_the_field(api: Api) -> None:
    _, client = await api.user()
    seller = api.sim.create_seller()
    await assert_422(await client.post("/api/v1/accounts", json={"id": "x1"}), "cookie")
    await assert_422(await client.post("/api/v1/accounts", json={"id": "a b", "cookie": seller["cookie"]}), "id")
    not_a_cookie = await client.post("/api/v1/accounts", json={"id": "x2", "cookie": "hello"})
    assert not_a_cookie.status_code == 422
    assert not_a_cookie.json()["field"] == "cookie" and not_a_cookie.json()["code"] == "invalid_cookie"
    extra = await client.post("/api/v1/accounts", json={"id": "x3", "cookie": seller["cookie"], "colour": "red"})
    await assert_422(extra, "colour")
    assert (await client.get("/api/v1/accounts")).json() == []


async def test_a_user_cannot_give_an_account_to_someone_else(api: Api) -> None:
    _, client = await api.user()
    seller = api.sim.create_seller()
    response = await client.post("/api/v1/accounts", json={"id": "gift", "cookie": seller["cookie"], "owner": "admin"})
    assert response.status_code == 403


async def test_an_admin_can_add_an_account_for_a_user(api: Api) -> None:
    name, client = await api.user()
    admin = await api.admin()
    account_id, _ = await api.account(admin, owner=name, enabled=False)
    assert [a["id"] for a in (await client.get("/api/v1/accounts")).json()] == [account_id]
    assert (await client.get(f"/api/v1/accounts/{account_id}")).json()["owner"] == name


# --- change and delete ----------------------------------------------------------------------------------------


async def test_patch_changes_only_the_fields_given(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, remark="before", enabled=False)
    patched = await client.patch(f"/api/v1/accounts/{account_id}", json={"pause_minutes": 3, "auto_confirm": True})
    assert patched.status_code == 200
    body = patched.json()
    assert body["pause_minutes"] == 3 and body["auto_confirm"] is True and body["remark"] == "before"
    await assert_422(await client.patch(f"/api/v1/accounts/{account_id}", json={"pause_minutes": -1}), "pause_minutes")


async def test_delete_stops_the_account_and_it_is_gone(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await api.running(client, account_id)
    assert (await client.delete(f"/api/v1/accounts/{account_id}")).status_code == 204
    assert (await client.get(f"/api/v1/accounts/{account_id}")).status_code == 404
    await eventually(lambda: not open_connections(api, seller))


async def test_disable_stops_and_enable_starts_the_account(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await api.running(client, account_id)
    stopped = await client.put(f"/api/v1/accounts/{account_id}/status", json={"enabled": False})
    assert stopped.json()["enabled"] is False and stopped.json()["state"]["lifecycle"] == "stopped"
    await eventually(lambda: not open_connections(api, seller))
    started = await client.put(f"/api/v1/accounts/{account_id}/status", json={"enabled": True})
    assert started.json()["enabled"] is True
    await api.running(client, account_id)
    await assert_422(await client.put(f"/api/v1/accounts/{account_id}/status", json={"enabled": "maybe"}), "enabled")


async def test_a_new_cookie_restarts_only_that_account(api: Api) -> None:
    _, client = await api.user()
    a_id, a_seller = await api.account(client)
    b_id, b_seller = await api.account(client)
    await api.running(client, a_id)
    await api.running(client, b_id)
    a_before = connection_ids(api, a_seller)
    b_before = connection_ids(api, b_seller)
    fresh = a_seller["cookie"] + "; extra=fresh-value-123"
    replaced = await client.put(f"/api/v1/accounts/{a_id}/cookie", json={"cookie": fresh})
    assert replaced.status_code == 200
    assert "fresh-value-123" not in replaced.text
    await api.running(client, a_id)
    await eventually(lambda: len(open_connections(api, a_seller)) == 1)
    assert connection_ids(api, a_seller) != a_before
    assert connection_ids(api, b_seller) == b_before
    assert "extra=fresh-value-123" in await api.server.store.get_account_cookie(a_id)


async def test_a_bad_or_foreign_cookie_is_refused_and_the_account_keeps_running(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await api.running(client, account_id)
    before = connection_ids(api, seller)
    await assert_422(await client.put(f"/api/v1/accounts/{account_id}/cookie", json={}), "cookie")
    broken = await client.put(f"/api/v1/accounts/{account_id}/cookie", json={"cookie": "no unb here=1"})
    assert broken.status_code == 422 and broken.json()["code"] == "invalid_cookie"
    other = api.sim.create_seller()
    foreign = await client.put(f"/api/v1/accounts/{account_id}/cookie", json={"cookie": other["cookie"]})
    assert foreign.status_code == 422
    assert connection_ids(api, seller) == before


# --- rules, settings, try -------------------------------------------------------------------------------------


async def test_rules_are_replaced_as_a_whole_and_read_back_in_order(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    rules = [
        {"keyword": "价格", "reply": "不议价", "id": "price"},
        {"keyword": "^发货", "reply": "今天发", "match": "regex", "priority": 5},
        {"keyword": "图", "reply": "https://img.example/x.png", "kind": "image", "item_id": "123456789012"},
    ]
    saved = await client.put(f"/api/v1/accounts/{account_id}/rules", json=rules)
    assert saved.status_code == 200
    read = (await client.get(f"/api/v1/accounts/{account_id}/rules")).json()
    assert [r["keyword"] for r in read] == ["价格", "^发货", "图"]
    assert read[0]["id"] == "price" and read[1]["match"] == "regex" and read[2]["kind"] == "image"
    assert all(r["id"] for r in read)


async def test_invalid_rules_are_422_and_nothing_changes(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    await client.put(f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "a", "reply": "b", "id": "keep"}])
    await assert_422(
        await client.put(f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "a", "reply": "b", "match": "x"}]),
        "0.match",
    )
    await assert_422(await client.put(f"/api/v1/accounts/{account_id}/rules", json=[{"reply": "b"}]), "0.keyword")
    bad_regex = await client.put(
        f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "(", "reply": "b", "match": "regex"}]
    )
    assert bad_regex.status_code == 422 and bad_regex.json()["code"] == "invalid_rule"
    assert [r["id"] for r in (await client.get(f"/api/v1/accounts/{account_id}/rules")).json()] == ["keep"]


async def test_settings_round_trip_and_the_ai_key_is_write_only(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    key = "sk-test-0123456789abcdefSECRET"
    body = {
        "default_reply": "您好，稍等",
        "default_reply_once_per_chat": True,
        "auto_confirm": True,
        "pause_minutes": 5,
        "debounce_seconds": 1.5,
        "ai": {"enabled": True, "base_url": api.sim.openai_url, "model": "sim", "api_key": key, "prompt": "be nice"},
    }
    saved = await client.put(f"/api/v1/accounts/{account_id}/settings", json=body)
    assert saved.status_code == 200
    read = await client.get(f"/api/v1/accounts/{account_id}/settings")
    for response in (saved, read):
        assert key not in response.text
    settings = read.json()
    assert settings["default_reply"] == "您好，稍等" and settings["debounce_seconds"] == 1.5
    assert settings["ai"]["has_api_key"] is True and settings["ai"]["model"] == "sim"
    assert "api_key" not in settings["ai"]
    # Saving again without the key keeps it; an explicit null removes it.
    body["ai"] = {**body["ai"], "model": "sim2"}
    del body["ai"]["api_key"]
    kept = (await client.put(f"/api/v1/accounts/{account_id}/settings", json=body)).json()
    assert kept["ai"]["has_api_key"] is True and kept["ai"]["model"] == "sim2"
    assert await api.server.store.get_ai_api_key(account_id) == key
    body["ai"]["api_key"] = None
    removed = (await client.put(f"/api/v1/accounts/{account_id}/settings", json=body)).json()
    assert removed["ai"]["has_api_key"] is False


async def test_bad_settings_are_422_naming_the_field(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    path = f"/api/v1/accounts/{account_id}/settings"
    await assert_422(await client.put(path, json={"pause_minutes": -1}), "pause_minutes")
    await assert_422(await client.put(path, json={"ai": {"max_discount_percent": 150}}), "ai.max_discount_percent")
    template = await client.put(path, json={"default_reply": "hello {nope}"})
    assert template.status_code == 422 and template.json()["code"] == "invalid_template"


async def test_try_shows_the_reply_and_the_rule_without_sending(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await client.put(f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "价格", "reply": "不议价", "id": "p"}])
    tried = await client.post(f"/api/v1/accounts/{account_id}/try", json={"text": "价格能少吗"})
    assert tried.status_code == 200
    assert tried.json() == {"reply": "不议价", "source": "rule:p", "reason": tried.json()["reason"]}
    nothing = (await client.post(f"/api/v1/accounts/{account_id}/try", json={"text": "你好"})).json()
    assert nothing["reply"] is None and nothing["reason"]
    await assert_422(await client.post(f"/api/v1/accounts/{account_id}/try", json={"text": ""}), "text")
    assert api.sim.sent(seller=seller["unb"]) == []


# --- conversation, manual reply, orders, delivery -------------------------------------------------------------


async def test_the_log_shows_the_buyer_message_and_the_reply_with_its_rule(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await client.put(
        f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "包邮", "reply": "包邮的", "id": "ship"}]
    )
    await api.running(client, account_id)
    pushed = api.sim.push_message(seller=seller["unb"], text="包邮吗？")

    async def log() -> list[dict[str, Any]] | None:
        response = await client.get(f"/api/v1/accounts/{account_id}/messages", params={"chat_id": pushed["chat_id"]})
        messages = response.json()
        return messages if {m["direction"] for m in messages} == {"in", "out"} else None

    messages = await eventually(log)
    inbound = next(m for m in messages if m["direction"] == "in")
    outbound = next(m for m in messages if m["direction"] == "out")
    assert inbound["text"] == "包邮吗？"
    assert outbound["text"] == "包邮的" and outbound["reply_source"] == "rule:ship"
    state = (await client.get(f"/api/v1/accounts/{account_id}/state")).json()
    assert state["messages_in"] >= 1 and state["replies_out"] >= 1
    await assert_422(await client.get(f"/api/v1/accounts/{account_id}/messages", params={"limit": 0}), "limit")


async def test_a_manual_reply_reaches_the_buyer(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await api.running(client, account_id)
    pushed = api.sim.push_message(seller=seller["unb"], text="在吗")
    await eventually(
        lambda: _has_inbound(client, account_id, pushed["chat_id"]),
    )
    path = f"/api/v1/accounts/{account_id}/chats/{pushed['chat_id']}/messages"
    sent = await client.post(path, json={"text": "在的，我来回答"})
    assert sent.status_code == 201, sent.text
    assert sent.json()["to_user"] == pushed["buyer"]
    delivered = await eventually(lambda: api.sim.sent(seller=seller["unb"], chat_id=pushed["chat_id"]))
    assert delivered[-1]["text"] == "在的，我来回答"
    await assert_422(await client.post(path, json={"text": ""}), "text")


async def _has_inbound(client: httpx.AsyncClient, account_id: str, chat_id: str) -> bool:
    response = await client.get(f"/api/v1/accounts/{account_id}/messages", params={"chat_id": chat_id})
    return any(m["direction"] == "in" for m in response.json())


async def test_a_manual_reply_to_a_stopped_account_is_409(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    response = await client.post(f"/api/v1/accounts/{account_id}/chats/c1/messages", json={"text": "hi"})
    assert response.status_code == 409
    assert response.json()["code"] == "account_not_connected"


async def test_orders_are_listed_with_their_history(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    store = api.server.store
    await store.record_order(account_id, "9001", status="paid", buyer_id="b1", item_id="i1", chat_id="c1")
    await store.record_order(account_id, "9001", status="shipped")
    orders = (await client.get(f"/api/v1/accounts/{account_id}/orders")).json()
    assert len(orders) == 1
    order = orders[0]
    assert order["order_id"] == "9001" and order["status"] == "shipped"
    assert order["buyer"] == "b1" and order["item_id"] == "i1" and order["chat_id"] == "c1"
    assert [h["status"] for h in order["history"]] == ["paid", "shipped"]
    assert order["delivery"] is None
    await assert_422(await client.get(f"/api/v1/accounts/{account_id}/orders", params={"limit": 5000}), "limit")


async def test_delivery_rules_show_stock_counts_but_never_the_goods_unless_revealed(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    rules = [
        {
            "kind": "batch",
            "item_id": "123456789012",
            "lines": ["CARD-AAA-111", "CARD-BBB-222"],
            "low_stock_threshold": 1,
        },
        {"kind": "text", "title_keyword": "会员", "content": "secret-goods-text", "delay_seconds": 2},
    ]
    saved = await client.put(f"/api/v1/accounts/{account_id}/delivery-rules", json=rules)
    assert saved.status_code == 200, saved.text
    listed = await client.get(f"/api/v1/accounts/{account_id}/delivery-rules")
    for response in (saved, listed):
        for secret in ("CARD-AAA-111", "CARD-BBB-222", "secret-goods-text"):
            assert secret not in response.text
    batch, text = listed.json()
    assert batch["stock"]["available"] == 2 and batch["low_stock"] is False
    assert text["has_content"] is True and text["delay_seconds"] == 2
    revealed = (await client.get(f"/api/v1/accounts/{account_id}/delivery-rules", params={"reveal": "true"})).json()
    assert sorted(revealed[0]["lines"]) == ["CARD-AAA-111", "CARD-BBB-222"]
    assert revealed[1]["content"] == "secret-goods-text"
    admin = await api.admin()
    peek = await admin.get(f"/api/v1/accounts/{account_id}/delivery-rules", params={"reveal": "true"})
    assert peek.status_code == 403 and peek.json()["code"] == "reveal_forbidden"
    # Keeping a rule by id without lines keeps its stock.
    kept = await client.put(
        f"/api/v1/accounts/{account_id}/delivery-rules", json=[{"id": batch["id"], "kind": "batch", "item_id": "1"}]
    )
    assert kept.json()[0]["stock"]["available"] == 2 and len(kept.json()) == 1


async def test_bad_delivery_rules_are_422_naming_the_field(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client, enabled=False)
    path = f"/api/v1/accounts/{account_id}/delivery-rules"
    await assert_422(await client.put(path, json=[{"kind": "magic"}]), "0.kind")
    await assert_422(await client.put(path, json=[{"kind": "text", "delay_seconds": -1}]), "0.delay_seconds")
    await assert_422(await client.put(path, json=[{"kind": "text", "lines": ["x"]}]), "0.lines")


# --- bulk -----------------------------------------------------------------------------------------------------


async def test_bulk_reports_a_result_per_id(api: Api) -> None:
    _, alice = await api.user()
    _, bob = await api.user()
    a1, _ = await api.account(alice, enabled=False)
    a2, _ = await api.account(alice, enabled=False)
    b1, _ = await api.account(bob, enabled=False)
    enabled = await alice.post("/api/v1/accounts/bulk", json={"action": "enable", "ids": [a1, b1, "ghost", a2]})
    assert enabled.status_code == 200
    results = {r["id"]: r for r in enabled.json()["results"]}
    assert [r["id"] for r in enabled.json()["results"]] == [a1, b1, "ghost", a2]
    assert results[a1]["ok"] and results[a2]["ok"]
    assert not results[b1]["ok"] and results[b1]["code"] == "account_not_found"
    assert not results["ghost"]["ok"] and results["ghost"]["code"] == "account_not_found"
    assert all(a["enabled"] for a in (await alice.get("/api/v1/accounts")).json())
    assert (await bob.get(f"/api/v1/accounts/{b1}")).json()["enabled"] is False
    deleted = await alice.post("/api/v1/accounts/bulk", json={"action": "delete", "ids": [a1, a2]})
    assert all(r["ok"] for r in deleted.json()["results"])
    assert (await alice.get("/api/v1/accounts")).json() == []


async def test_bad_bulk_bodies_are_422_naming_the_field(api: Api) -> None:
    _, client = await api.user()
    await assert_422(await client.post("/api/v1/accounts/bulk", json={"action": "explode", "ids": ["a"]}), "action")
    await assert_422(await client.post("/api/v1/accounts/bulk", json={"action": "enable", "ids": []}), "ids")


async def test_no_answer_ever_carried_a_full_cookie_or_api_key(api: Api) -> None:
    store = api.server.store
    secrets = [await store.get_account_cookie(a.id) for a in await store.list_accounts()]
    assert secrets and api.seen
    for body in api.seen:
        for secret in secrets:
            assert secret not in body
        assert "sk-test-0123456789abcdefSECRET" not in body
