"""One running service per test module: simulator + SQLite store + engine + the app on a loopback port.

`run_server` itself starts it (the same code as `xianyu-autoreply serve`), so these tests cover the runner too.
Tests talk HTTP with httpx; each `Api.user(...)` is a signed-in client of its own. Every answer any client
receives is kept, so a test can check that no secret ever left the server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from xianyu_autoreply.api.auth import hash_password
from xianyu_autoreply.api.server import RunningServer, run_server
from xianyu_autoreply.config import Settings, load_settings
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import User

from ..conftest import LOOPBACK_ONLY
from ..integration.engine.conftest import FAST_OPTIONS, eventually

ADMIN = "admin"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "user-password-1"

__all__ = ["ADMIN", "ADMIN_PASSWORD", "PASSWORD", "Api", "eventually"]


@dataclass
class Api:
    """The running service, the simulator behind it, and signed-in HTTP clients."""

    url: str
    server: RunningServer
    sim: Simulator
    seen: list[str] = field(default_factory=list)  # every response body any client received
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    names: itertools.count[int] = field(default_factory=itertools.count)
    _admin: httpx.AsyncClient | None = None
    _hash: str | None = None

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client of the service (not signed in unless headers say so) that records every answer."""

        async def keep(response: httpx.Response) -> None:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                await response.aread()
                self.seen.append(response.text)

        client = httpx.AsyncClient(base_url=self.url, timeout=30, event_hooks={"response": [keep]}, **kwargs)
        self.clients.append(client)
        return client

    async def token(self, username: str, password: str) -> str:
        response = await self.client().post("/api/v1/auth/token", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def login(self, username: str, password: str) -> httpx.AsyncClient:
        token = await self.token(username, password)
        return self.client(headers={"Authorization": f"Bearer {token}"})

    def signed_in(self, user: User) -> httpx.AsyncClient:
        """A client with a token issued directly (no argon2 round: logging in itself is tested in test_auth)."""
        token = self.server.app.state.auth.issue_token(user)
        return self.client(headers={"Authorization": f"Bearer {token}"})

    async def admin(self) -> httpx.AsyncClient:
        if self._admin is None:
            self._admin = self.signed_in(await self.server.store.get_user(ADMIN))
        return self._admin

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    async def user(self, role: str = "user") -> tuple[str, httpx.AsyncClient]:
        """A new user with password PASSWORD, signed in (users are created over the API in test_users)."""
        if self._hash is None:
            self._hash = await hash_password(PASSWORD)
        name = self.unique("user")
        user = await self.server.store.create_user(name, self._hash, role=role)
        return name, self.signed_in(user)

    async def account(self, client: httpx.AsyncClient, **body: Any) -> tuple[str, dict[str, Any]]:
        """A new simulator seller added as an account by `client` -> (account id, seller)."""
        seller = self.sim.create_seller()
        account_id = self.unique("acct")
        response = await client.post("/api/v1/accounts", json={"id": account_id, "cookie": seller["cookie"], **body})
        assert response.status_code == 201, response.text
        return account_id, seller

    async def running(self, client: httpx.AsyncClient, account_id: str) -> dict[str, Any]:
        """Wait until the account's state says running and connected; returns that state."""

        async def state() -> dict[str, Any] | None:
            body = (await client.get(f"/api/v1/accounts/{account_id}/state")).json()
            return body if body["lifecycle"] == "running" and body["connection"] == "connected" else None

        result: dict[str, Any] = await eventually(state, timeout=20)
        return result


def api_settings(sim: Simulator, data_dir: Path, **overrides: Any) -> Settings:
    return load_settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'xianyu.db'}",
        host="127.0.0.1",
        port=0,
        admin_username=ADMIN,
        admin_password=ADMIN_PASSWORD,
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        # Relaxed heartbeats: these tests are about the API, and a busy machine must not cause reconnects.
        session={"heartbeat_interval": 2.0, "heartbeat_timeout": 10.0},
        api={"sse_heartbeat": 1.0, **overrides.pop("api", {})},
        outbound=overrides.pop("outbound", LOOPBACK_ONLY),  # the simulator's AI, the tests' receivers
        **overrides,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The service for the whole module (tests make their own users and accounts, so they do not interfere)."""
    sim = Simulator()
    await sim.start(host="127.0.0.1", port=0)
    settings = api_settings(sim, tmp_path_factory.mktemp("api") / "data")
    ready: asyncio.Future[RunningServer] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        run_server(
            settings,
            on_ready=ready.set_result,
            engine_options=FAST_OPTIONS,
            handle_signals=False,
            log_level="warning",
        )
    )
    await asyncio.wait({ready, serving}, return_when=asyncio.FIRST_COMPLETED)
    if serving.done():
        serving.result()  # it failed to start: show why
    server = ready.result()
    service = Api(url=server.url, server=server, sim=sim)
    try:
        yield service
    finally:
        for client in service.clients:
            await client.aclose()
        server.stop()
        await serving
        await sim.stop()
