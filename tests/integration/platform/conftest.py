"""The platform suites' simulator and MTOP client (a module may override them, as the TLS suite does)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.simulator import Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator()
    await simulator.start(host="127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def mtop(sim: Simulator) -> AsyncIterator[MtopClient]:
    client = MtopClient(mtop_url=sim.mtop_url, passport_url=sim.passport_url, timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()
