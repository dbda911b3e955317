"""Fixtures for the simulator's tests: a running simulator, an HTTP client, a seller, a registered connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from xianyu_autoreply.simulator import Simulator

from .bare import BareClient, login


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        yield client


@pytest.fixture
def seller(sim: Simulator) -> dict[str, Any]:
    return sim.create_seller(nick="测试小店")


@pytest.fixture
async def online(sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]) -> AsyncIterator[BareClient]:
    client, _, _ = await login(sim, http, seller)
    try:
        yield client
    finally:
        await client.close()
