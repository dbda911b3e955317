"""Every route of the OpenAPI schema x {anonymous, owner, other user, admin}: who gets in, and who is refused.

A route added to the schema without a row here fails the coverage test, so access is always a deliberate choice.
A refused request must also change nothing: the other user's DELETE leaves the account in place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ..api.conftest import PASSWORD, Api
from ..api.conftest import eventually as eventually  # noqa: PLC0414

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROLES = ("anonymous", "owner", "other", "admin")

# Access kinds: who may call a route.
PUBLIC = "public"  # everyone, signed in or not
SIGNED_IN = "signed_in"  # any signed-in user (acts on the caller's own data)
ACCOUNT = "account"  # the account's owner and admins; others see 404 exactly like a missing account
ADMIN_ONLY = "admin"  # admins only; users get 403

Body = Callable[["Fixture"], Awaitable[dict[str, Any]]]


@dataclass
class Fixture:
    """What one matrix cell acts on: a fresh account of the owner (stopped unless the route needs it running)."""

    api: Api
    account_id: str = ""
    chat_id: str = ""
    buyer: str = ""
    target_user: str = ""
    cookie: str = ""


@dataclass(frozen=True)
class Route:
    access: str
    body: dict[str, Any] | None = None
    running: bool = False  # the route needs a live account (a manual reply)
    query: str = ""
    admin: set[int] | str = "2xx"  # what an admin gets where it differs from the owner


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/api/v1/auth/me"): Route(SIGNED_IN),
    ("GET", "/api/v1/accounts"): Route(SIGNED_IN),
    ("POST", "/api/v1/accounts/bulk"): Route(SIGNED_IN, {"action": "disable", "ids": ["{account_id}"]}),
    ("GET", "/api/v1/accounts/{account_id}"): Route(ACCOUNT),
    ("PATCH", "/api/v1/accounts/{account_id}"): Route(ACCOUNT, {"remark": "changed"}),
    ("DELETE", "/api/v1/accounts/{account_id}"): Route(ACCOUNT),
    ("PUT", "/api/v1/accounts/{account_id}/status"): Route(ACCOUNT, {"enabled": False}),
    ("PUT", "/api/v1/accounts/{account_id}/cookie"): Route(ACCOUNT, {"cookie": "{cookie}"}),
    ("GET", "/api/v1/accounts/{account_id}/state"): Route(ACCOUNT),
    ("GET", "/api/v1/accounts/{account_id}/rules"): Route(ACCOUNT),
    ("PUT", "/api/v1/accounts/{account_id}/rules"): Route(ACCOUNT, [{"keyword": "k", "reply": "r"}]),  # type: ignore[arg-type]
    ("GET", "/api/v1/accounts/{account_id}/settings"): Route(ACCOUNT),
    ("PUT", "/api/v1/accounts/{account_id}/settings"): Route(ACCOUNT, {"default_reply": "hi"}),
    ("GET", "/api/v1/accounts/{account_id}/messages"): Route(ACCOUNT),
    ("GET", "/api/v1/accounts/{account_id}/orders"): Route(ACCOUNT),
    # The goods themselves are revealed to the owner only (DESIGN §2), not even to an admin.
    ("GET", "/api/v1/accounts/{account_id}/delivery-rules"): Route(ACCOUNT, query="?reveal=true", admin={403}),
    ("PUT", "/api/v1/accounts/{account_id}/delivery-rules"): Route(
        ACCOUNT,
        [{"kind": "text", "content": "c", "title_keyword": "t"}],  # type: ignore[arg-type]
    ),
    ("POST", "/api/v1/accounts/{account_id}/try"): Route(ACCOUNT, {"text": "hello"}),
    ("POST", "/api/v1/accounts/{account_id}/chats/{chat_id}/messages"): Route(
        ACCOUNT, {"text": "manual", "to_user": "{buyer}"}, running=True
    ),
    ("GET", "/api/v1/users"): Route(ADMIN_ONLY),
    ("POST", "/api/v1/users"): Route(ADMIN_ONLY, {"username": "{target_user}", "password": PASSWORD}),
    ("PATCH", "/api/v1/users/{username}"): Route(ADMIN_ONLY, {"role": "user"}),
    ("DELETE", "/api/v1/users/{username}"): Route(ADMIN_ONLY),
    ("GET", "/api/v1/notifications"): Route(SIGNED_IN),
    ("PUT", "/api/v1/notifications"): Route(SIGNED_IN, {"urls": [], "events": []}),
    ("GET", "/api/v1/events"): Route(SIGNED_IN),
    ("GET", "/healthz"): Route(PUBLIC),
    ("GET", "/readyz"): Route(PUBLIC),
    ("GET", "/metrics"): Route(PUBLIC),
}
# Not in the matrix: the sign-in itself (tested in tests/api/test_auth.py and the lockout test here) and adding an
# account (the cell would need its own simulator seller; covered by tests/api/test_accounts.py).
NOT_IN_MATRIX = {("POST", "/api/v1/auth/token"), ("POST", "/api/v1/accounts")}


def expected(access: str, role: str) -> set[int] | str:
    """The status (or class) each role must get."""
    if access == PUBLIC:
        return "2xx"
    if role == "anonymous":
        return {401}
    if access == SIGNED_IN:
        return "2xx"
    if access == ADMIN_ONLY:
        return "2xx" if role == "admin" else {403}
    return {404} if role == "other" else "2xx"


def fill(value: Any, cell: Fixture) -> Any:
    """Put the cell's ids into a body or path template."""
    if isinstance(value, str):
        return value.format(
            account_id=cell.account_id,
            chat_id=cell.chat_id,
            buyer=cell.buyer,
            username=cell.target_user,
            target_user=cell.target_user,
            cookie=cell.cookie,
        )
    if isinstance(value, list):
        return [fill(v, cell) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, cell) for k, v in value.items()}
    return value


async def test_every_schema_route_has_a_row_in_the_matrix(api: Api) -> None:
    schema = (await api.client().get("/openapi.json")).json()
    routes = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert routes == set(ROUTES) | NOT_IN_MATRIX


async def _cell(api: Api, owner: httpx.AsyncClient, route: Route, method: str, path: str) -> Fixture:
    cell = Fixture(api, target_user=api.unique("target"))
    if "{account_id}" in path or "{account_id}" in str(route.body):
        cell.account_id, seller = await api.account(owner, enabled=route.running)
        cell.cookie = seller["cookie"]
        if route.running:
            await api.running(owner, cell.account_id)
            pushed = api.sim.push_message(seller["unb"], "在吗")
            cell.chat_id, cell.buyer = pushed["chat_id"], pushed["buyer"]
    if "{username}" in path:
        admin = await api.admin()
        created = await admin.post("/api/v1/users", json={"username": cell.target_user, "password": PASSWORD})
        assert created.status_code == 201, created.text
    return cell


async def _call(client: httpx.AsyncClient, method: str, url: str, body: Any) -> int:
    if url.endswith("/events"):
        async with client.stream(method, url) as streamed:
            return streamed.status_code
    return (await client.request(method, url, json=body)).status_code


@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
async def test_each_role_gets_the_expected_answer(api: Api, method: str, path: str) -> None:
    route = ROUTES[(method, path)]
    _, owner = await api.user()
    _, other = await api.user()
    clients = {"anonymous": api.client(), "owner": owner, "other": other, "admin": await api.admin()}
    got: dict[str, int] = {}
    for role in ROLES:
        cell = await _cell(api, owner, route, method, path)
        url = fill(path, cell) + route.query
        got[role] = await _call(clients[role], method, url, fill(route.body, cell))
        want = route.admin if role == "admin" and route.access == ACCOUNT else expected(route.access, role)
        ok = 200 <= got[role] < 300 if want == "2xx" else got[role] in want
        assert ok, (role, method, url, got[role], want)
        if cell.account_id and role in ("anonymous", "other"):  # a refused request changed nothing
            seen = await owner.get(f"/api/v1/accounts/{cell.account_id}")
            assert seen.status_code == 200 and seen.json()["remark"] == "", seen.text
            assert seen.json()["enabled"] is route.running
