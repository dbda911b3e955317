"""SIGKILL in the middle of cookie updates: the database keeps the old or the new cookie, never a mix."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import textwrap
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from xianyu_autoreply.config import Settings
from xianyu_autoreply.engine.scheduler import Lifecycle
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import Store

from .conftest import EngineFactory, eventually

# Keeps replacing the cookies of all accounts, alternating two versions, until it is killed.
WRITER = textwrap.dedent(
    """
    import asyncio, json, sys
    from xianyu_autoreply.config import load_settings
    from xianyu_autoreply.store import Store

    async def main():
        spec = json.loads(sys.argv[1])
        store = await Store.open(load_settings(data_dir=spec["data_dir"], database_url=spec["url"]), migrate=False)
        n = 0
        print("ready", flush=True)
        while True:
            for account_id, versions in spec["cookies"].items():
                await store.update_cookie(account_id, versions[n % 2])
            n += 1

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("round_", range(5))
async def test_sigkill_during_cookie_updates_leaves_old_or_new_cookie(
    round_: int, settings: Settings, store: Store, sim: Simulator, make_engine: EngineFactory
) -> None:
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("one backend is enough for the kill test; PostgreSQL transactions are covered by the store tests")
    import json

    sellers = [sim.create_seller() for _ in range(4)]
    cookies: dict[str, list[str]] = {}
    for i, seller in enumerate(sellers):
        account_id = f"acc{i}"
        await store.create_account(account_id, seller["cookie"], enabled=i != 3)
        cookies[account_id] = [f"{seller['cookie']}; v=old{'x' * 200}", f"{seller['cookie']}; v=new{'y' * 300}"]
    spec = {"data_dir": str(settings.data_dir), "url": settings.database_url, "cookies": cookies}
    env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRITER, json.dumps(spec), stdout=PIPE, stderr=PIPE, env=env
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"ready", await proc.stderr.read()
        await asyncio.sleep(random.Random(round_).uniform(0.2, 1.0))
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    db_file = Path(settings.database_url.split("///", 1)[1])
    with sqlite3.connect(db_file) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    for account_id, versions in cookies.items():
        assert await store.get_account_cookie(account_id) in versions

    engine = await make_engine()
    for i in range(3):
        await eventually(lambda i=i: engine.state(f"acc{i}").lifecycle is Lifecycle.RUNNING)
    assert engine.state("acc3").lifecycle is Lifecycle.STOPPED
