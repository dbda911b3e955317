"""Server-sent events, health, readiness, metrics, OpenAPI and the error shape of unknown routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import Api, eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event name, data) for each event of a text/event-stream; comment lines (heartbeats) skipped."""
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            yield kind, json.loads(line.removeprefix("data:"))


async def next_event(
    stream: AsyncIterator[tuple[str, dict[str, Any]]], kind: str, account_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """The next event of `kind` (of that account, with those field values, when given)."""
    async for name, data in stream:
        if name != kind or (account_id is not None and data["account_id"] != account_id):
            continue
        if all(data.get(key) == value for key, value in fields.items()):
            return data
    raise AssertionError("the event stream ended")


async def test_the_event_stream_carries_an_inbound_buyer_message(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await api.running(client, account_id)
    async with client.stream("GET", "/api/v1/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        pushed = api.sim.push_message(seller=seller["unb"], text="还在卖吗")
        message = await next_event(events, "message.in", account_id)
    assert message["text"] == "还在卖吗" and message["chat_id"] == pushed["chat_id"]


async def test_a_user_receives_only_events_of_their_own_accounts(api: Api) -> None:
    _, alice = await api.user()
    _, bob = await api.user()
    a_id, a_seller = await api.account(alice)
    b_id, b_seller = await api.account(bob)
    await api.running(alice, a_id)
    await api.running(bob, b_id)
    async with bob.stream("GET", "/api/v1/events") as response:
        events = sse_events(response)
        api.sim.push_message(seller=a_seller["unb"], text="for alice")
        api.sim.push_message(seller=b_seller["unb"], text="for bob")
        first = await next_event(events, "message.in")
    assert first["account_id"] == b_id and first["text"] == "for bob"


async def test_the_event_stream_reports_account_state_changes(api: Api) -> None:
    _, client = await api.user()
    account_id, _ = await api.account(client)
    await api.running(client, account_id)
    async with client.stream("GET", "/api/v1/events") as response:
        events = sse_events(response)
        await client.put(f"/api/v1/accounts/{account_id}/status", json={"enabled": False})
        change = await next_event(events, "account.state", account_id, lifecycle="stopped")
    assert change["reason"]


async def test_healthz_and_readyz(api: Api) -> None:
    client = api.client()
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "migrations": "head", "engine": "running"}


async def scrape(api: Api) -> dict[str, float]:
    text = (await api.client().get("/metrics")).text
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


async def test_metrics_count_accounts_by_state_and_messages(api: Api) -> None:
    _, client = await api.user()
    account_id, seller = await api.account(client)
    await client.put(f"/api/v1/accounts/{account_id}/rules", json=[{"keyword": "hi", "reply": "hello"}])
    await api.running(client, account_id)
    api.sim.push_message(seller=seller["unb"], text="hi there")

    async def replied() -> dict[str, float] | None:
        # The reply is counted when sent and timed once its confirmation went through the event bus.
        values = await scrape(api)
        return values if values.get("xar_reply_latency_seconds_count", 0) >= 1 else None

    values = await eventually(replied)
    assert values['xar_accounts{lifecycle="running"}'] >= 1
    assert values['xar_connections{state="connected"}'] >= 1
    assert values["xar_messages_in_total"] >= 1
    assert values["xar_replies_out_total"] >= 1
    assert "xar_reconnects_total" in values
    assert values["xar_engine_running"] == 1
    assert values["xar_db_ping_seconds"] > 0
    assert values['xar_replies_sent_by_source_total{source="rule"}'] >= 1


async def test_unknown_routes_answer_in_the_error_shape(api: Api) -> None:
    client = api.client()
    missing = await client.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"code": "not_found", "message": "Not Found"}
    wrong_method = await client.delete("/healthz")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"


async def test_openapi_lists_every_route_of_the_design(api: Api) -> None:
    client = api.client()
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    expected = {
        "/api/v1/auth/token": {"post"},
        "/api/v1/accounts": {"get", "post"},
        "/api/v1/accounts/{account_id}": {"get", "patch", "delete"},
        "/api/v1/accounts/{account_id}/cookie": {"put"},
        "/api/v1/accounts/{account_id}/status": {"put"},
        "/api/v1/accounts/{account_id}/state": {"get"},
        "/api/v1/accounts/{account_id}/rules": {"get", "put"},
        "/api/v1/accounts/{account_id}/settings": {"get", "put"},
        "/api/v1/accounts/{account_id}/messages": {"get"},
        "/api/v1/accounts/{account_id}/orders": {"get"},
        "/api/v1/accounts/{account_id}/delivery-rules": {"get", "put"},
        "/api/v1/accounts/{account_id}/try": {"post"},
        "/api/v1/accounts/{account_id}/chats/{chat_id}/messages": {"post"},
        "/api/v1/accounts/bulk": {"post"},
        "/api/v1/users": {"get", "post"},
        "/api/v1/users/{username}": {"patch", "delete"},
        "/api/v1/notifications": {"get", "put"},
        "/api/v1/events": {"get"},
        "/healthz": {"get"},
        "/readyz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), path
