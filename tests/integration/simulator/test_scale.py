"""Many sellers at once: bookkeeping and fan-out stay right (the 5,000-seller figure comes from a benchmark run)."""

from __future__ import annotations

import asyncio

import httpx

from xianyu_autoreply.simulator import Simulator

from .bare import BareClient, login

SELLERS = 100


async def test_a_hundred_sellers_register_and_each_gets_its_own_push(sim: Simulator, http: httpx.AsyncClient) -> None:
    sellers = [sim.create_seller() for _ in range(SELLERS)]
    logged_in = await asyncio.gather(*(login(sim, http, s) for s in sellers))
    clients: list[BareClient] = [client for client, _, _ in logged_in]
    assert sim.stats()["registered"] == SELLERS
    pushed = [sim.push_message(s["unb"], f"hello {i}") for i, s in enumerate(sellers)]
    assert all(p["delivered"] == 1 for p in pushed)
    pushes = await asyncio.gather(*(c.next_push() for c in clients))
    assert len({p["headers"]["mid"] for p in pushes}) == SELLERS
    await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(0.1)
    assert sim.stats()["registered"] == 0 and sim.stats()["connections"] == 0
