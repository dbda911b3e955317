"""Thousands of random concurrent operations over 20 accounts: the engine ends with one truth."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from xianyu_autoreply.engine.scheduler import AccountScheduler, Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountNotFound, Conflict, Rule, Store

from .conftest import eventually

ACCOUNTS = 20
OPERATIONS = 2000
BATCH = 40


async def test_random_concurrent_operations_leave_memory_database_and_sessions_in_agreement(
    engine: AccountScheduler, sim: Simulator, store: Store
) -> None:
    rng = random.Random(20261122)
    sellers = [sim.create_seller() for _ in range(ACCOUNTS)]
    ids = [f"acc{i:02d}" for i in range(ACCOUNTS)]
    counts: dict[str, int] = {}

    async def operate(n: int) -> None:
        # Every random draw happens before the first await, so the run is the same for a given seed.
        i = rng.randrange(ACCOUNTS)
        kind = rng.choices(["add", "remove", "cookie", "enable", "disable", "rules"], [4, 1, 2, 2, 2, 2])[0]
        enabled = rng.random() < 0.7
        try:
            if kind == "add":
                await engine.add(ids[i], sellers[i]["cookie"], enabled=enabled)
            elif kind == "remove":
                await engine.remove(ids[i])
            elif kind == "cookie":
                await engine.update_cookie(ids[i], f"{sellers[i]['cookie']}; n={n}")
            elif kind == "enable":
                await engine.set_enabled(ids[i], True)
            elif kind == "disable":
                await engine.set_enabled(ids[i], False)
            else:
                await engine.set_rules(ids[i], [Rule(f"k{n}", f"v{n}")])
            counts[kind] = counts.get(kind, 0) + 1
        except (AccountNotFound, Conflict):
            counts["refused"] = counts.get("refused", 0) + 1

    for start in range(0, OPERATIONS, BATCH):
        await asyncio.gather(*(operate(n) for n in range(start, start + BATCH)))

    stored = {a.id: a for a in await store.list_accounts()}
    assert set(stored) == set(engine.account_ids())
    assert counts.get("add", 0) > 20 and counts.get("cookie", 0) > 100  # the run really exercised things

    def converged() -> bool:
        for i, account_id in enumerate(ids):
            open_conns = [c for c in sim.connections(seller=sellers[i]["unb"]) if not c["closed_ms"]]
            account = stored.get(account_id)
            if account is not None and account.enabled:
                if len(open_conns) != 1 or engine.state(account_id).lifecycle is not Lifecycle.RUNNING:
                    return False
            elif open_conns:
                return False
        return True

    await eventually(converged, timeout=30)
    for account_id, account in stored.items():
        assert (engine.session(account_id) is not None) == account.enabled
        secrets = await store.get_account_secrets(account_id)
        session = engine.session(account_id)
        if session is not None:
            assert session.cookie == secrets.cookie or secrets.cookie.startswith(session.cookie.split("; n=")[0])
    supervisors = [t for t in asyncio.all_tasks() if t.get_name().startswith("account:")]
    assert sorted(t.get_name() for t in supervisors) == sorted(f"account:{a}" for a, x in stored.items() if x.enabled)
    live_session_tasks: dict[str, Any] = {}
    for task in asyncio.all_tasks():
        owner = task.get_name().split(":")[0]
        if owner.startswith("acc") and owner != "account":
            live_session_tasks.setdefault(owner, []).append(task.get_name())
    assert set(live_session_tasks) <= {a for a, x in stored.items() if x.enabled}
