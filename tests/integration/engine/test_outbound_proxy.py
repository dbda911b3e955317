"""An account whose proxy the outbound policy refuses never connects, and its state says why."""

from __future__ import annotations

from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator

from .conftest import eventually


async def test_an_account_with_a_refused_proxy_never_connects_and_says_why(
    engine: AccountScheduler, sim: Simulator
) -> None:
    seller = sim.create_seller()
    # Written past the API (which would refuse it at save time): the connect itself checks again.
    await engine.add("a", seller["cookie"], proxy="socks5://user:pw@10.0.0.5:1080")
    await eventually(lambda: engine.state("a").lifecycle is Lifecycle.ERROR, timeout=15)
    state = engine.state("a")
    assert state.last_error is not None
    assert "proxy URL refused: 10.0.0.5 is a private address" in state.last_error and "pw" not in state.last_error
    assert sim.connections(seller=seller["unb"]) == []
