"""Schemathesis over the OpenAPI schema: whatever the schema allows (and much it does not), no answer is a 500.

The service runs in a thread of its own (schemathesis calls it synchronously); each generated request is sent
with a fresh admin token, so a generated password change cannot lock the rest of the run out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from xianyu_autoreply.api.server import RunningServer, run_server
from xianyu_autoreply.simulator import Simulator

from ..integration.engine.conftest import FAST_OPTIONS
from .conftest import ADMIN, api_settings


@dataclass
class Threaded:
    server: RunningServer
    loop: asyncio.AbstractEventLoop

    def admin_headers(self) -> dict[str, str]:
        user = asyncio.run_coroutine_threadsafe(self.server.store.get_user(ADMIN), self.loop).result(30)
        return {"Authorization": f"Bearer {self.server.app.state.auth.issue_token(user)}"}


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Threaded]:
    ready: dict[str, Any] = {}
    started = threading.Event()
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"

    async def main() -> None:
        sim = Simulator()
        await sim.start(host="127.0.0.1", port=0)

        def on_ready(server: RunningServer) -> None:
            ready["server"] = server
            ready["loop"] = asyncio.get_running_loop()
            started.set()

        try:
            await run_server(
                api_settings(sim, data_dir),
                on_ready=on_ready,
                engine_options=FAST_OPTIONS,
                handle_signals=False,
                log_level="critical",
            )
        finally:
            await sim.stop()
            started.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="fuzzed-service", daemon=True)
    thread.start()
    started.wait(120)
    assert "server" in ready, "the service did not start"
    service = Threaded(ready["server"], ready["loop"])
    try:
        yield service
    finally:
        service.loop.call_soon_threadsafe(service.server.stop)
        thread.join(60)


@pytest.fixture(scope="module")
def api_schema(threaded: Threaded) -> Any:
    return schemathesis.openapi.from_dict(threaded.server.app.openapi())


schema = schemathesis.pytest.from_fixture("api_schema")
# Event streams never end; the token endpoint's throttle and lockout are exercised in test_auth.
schema = schema.exclude(path="/api/v1/events").exclude(path="/api/v1/auth/token")


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_the_schema_allows_gets_a_server_error(case: Any, threaded: Threaded) -> None:
    response = case.call(base_url=threaded.server.url, headers=threaded.admin_headers(), timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
