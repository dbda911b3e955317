"""Scale-out on a real PostgreSQL: connect time, failover after SIGKILL, handover after SIGTERM, rebalance churn.

    python -m bench failover [--quick]
    python -m bench.failover [--workers 3] [--accounts 300] [--buckets 256] [--ttl 6] [--margin 1.5] [--quick]

A private PostgreSQL is started in a temp directory (pytest-postgresql's executor around the distribution's
`pg_ctl`, as tests/conftest.py does); the simulator runs in its own process; the workers are real
`python -m xianyu_autoreply worker` subprocesses. The simulator is the judge throughout: which connections each
seller has, and how many replies each buyer message got. Steps and their figures, each beside its reference:

- start N workers: time until every account has exactly one registered connection, beside the floor (the
  workers' settle time + accounts / (workers x connect rate));
- a newcomer joins: buckets that changed owner, beside the newcomer's fair share (buckets / (N + 1));
- SIGKILL one worker: time until its accounts are connected again elsewhere, beside the lease TTL (ratio);
- SIGTERM one worker right after a question to every account: time until its buckets are released and its
  accounts connected elsewhere, beside the lease TTL (what waiting for expiry would take);
- every buyer message that reached a connection: answered exactly once? (the SIGKILL may cost the answers that
  worker had claimed but not sent: counted as lost, never doubled), and no seller ever had two live connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xianyu_autoreply.config import load_settings
from xianyu_autoreply.engine.scheduler import EngineOptions
from xianyu_autoreply.store import Store
from xianyu_autoreply.store.cluster import ClusterStore, bucket_of

from .harness import SimulatorProcess, environment, populate, quiet_logs, ratio, verdict, write_result

# --- a private PostgreSQL ---------------------------------------------------------------------------------------


def _pg_ctl() -> str | None:
    found = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")
    found.sort(key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0)
    return found[-1] if found else shutil.which("pg_ctl")


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (as tests/conftest.py starts one); yields the URL of its `postgres` db."""
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        raise RuntimeError("no PostgreSQL server: /usr/lib/postgresql/*/bin/pg_ctl not found")
    from port_for import get_port
    from pytest_postgresql.executors import PostgreSQLExecutor

    base = Path(tempfile.mkdtemp(prefix="xar-bench-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses root: run pg_ctl as `postgres` in a directory it owns
        postgres_user = pwd.getpwnam("postgres")
        wrapper = base / "pg_ctl"
        wrapper.write_text(f'#!/bin/sh\nexec runuser -u postgres -- "{pg_ctl}" "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.chown(base, postgres_user.pw_uid, postgres_user.pw_gid)
        pg_ctl = str(wrapper)
    port = get_port(None)
    assert port is not None
    executor = PostgreSQLExecutor(
        executable=pg_ctl,
        host="127.0.0.1",
        port=port,
        datadir=str(base / "data"),
        unixsocketdir=str(base),
        logfile=str(base / "postgresql.log"),
        startparams="-w",
        dbname="postgres",
        user="postgres",
        postgres_options="-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
    )
    executor.start()
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        executor.stop()
        shutil.rmtree(base, ignore_errors=True)


# --- workers and the judge --------------------------------------------------------------------------------------


class Fleet:
    """Worker subprocesses on one database, and what the simulator says about them."""

    def __init__(self, sim: SimulatorProcess, env: dict[str, str], logs: Path) -> None:
        self.sim, self.env, self.logs = sim, env, logs
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.asked: dict[str, str] = {}  # message id -> chat id, for every message that reached a connection
        self.doubles: Counter[str] = Counter()  # seller -> samples with two registered live connections

    async def spawn(self, name: str) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "xianyu_autoreply", "worker",
                env={**self.env, "XAR_CLUSTER__NODE_ID": name},
                stdout=asyncio.subprocess.DEVNULL, stderr=log,
            )  # fmt: skip

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    async def close(self) -> None:
        live = [p for p in self.procs.values() if p.returncode is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-10:])
            for p in sorted(self.logs.glob("*.log"))
        )

    async def registered(self) -> list[dict[str, Any]]:
        return [c for c in await self.sim.call("GET", "connections") if c["registered"] and not c["closed_ms"]]

    async def watch(self) -> None:
        """Sample the live connections: a seller with two at once would be a double owner."""
        while True:
            live = Counter(c["seller"] for c in await self.registered())
            self.doubles.update(seller for seller, n in live.items() if n > 1)
            await asyncio.sleep(0.1)

    async def until_moved(self, sellers: set[str], old: set[int], *, timeout: float) -> float:
        """Seconds until each seller has exactly one registered connection and none from `old`."""
        started = time.monotonic()
        while True:
            live = [c for c in await self.registered() if c["seller"] in sellers]
            per = Counter(c["seller"] for c in live)
            if not {c["id"] for c in live} & old and len(per) == len(sellers) and set(per.values()) == {1}:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{len(per)} of {len(sellers)} sellers connected after {timeout:.0f} s")
            await asyncio.sleep(0.05)

    async def until_any(self, *, timeout: float) -> float:
        """Seconds until any seller has a registered connection."""
        started = time.monotonic()
        while not await self.registered():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no connection after {timeout:.0f} s")
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def connection_ids(self, sellers: set[str]) -> set[int]:
        return {c["id"] for c in await self.registered() if c["seller"] in sellers}

    async def ask(self, sellers: list[str], text: str) -> int:
        """One new buyer message (in a new chat) to each seller; how many reached a connection."""
        sem = asyncio.Semaphore(32)

        async def one(seller: str) -> None:
            async with sem:
                pushed = await self.sim.call("POST", "messages", {"seller": seller, "text": text})
            if pushed["delivered"]:
                self.asked[pushed["message_id"]] = pushed["chat_id"]

        before = len(self.asked)
        await asyncio.gather(*(one(s) for s in sellers))
        return len(self.asked) - before

    async def replies(self) -> Counter[str]:
        """Replies per chat of the asked messages."""
        chats = set(self.asked.values())
        return Counter(s["chat_id"] for s in await self.sim.call("GET", "sent") if s["chat_id"] in chats)

    async def until_answered(self, *, timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            replies = await self.replies()
            if all(replies[c] for c in self.asked.values()):
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - started


# --- the run ----------------------------------------------------------------------------------------------------


async def _owners(cluster: ClusterStore) -> dict[int, str | None]:
    return {lease.bucket: lease.owner for lease in await cluster.leases()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ttl, margin, buckets, n = args.ttl, args.margin, args.buckets, args.workers
    result: dict[str, Any] = {
        "environment": environment(),
        "config": {"workers": n, "accounts": args.accounts, "buckets": buckets, "lease_ttl_s": ttl,
                   "lease_margin_s": margin},
    }  # fmt: skip
    with postgres() as url, tempfile.TemporaryDirectory(prefix="xar-bench-") as tmp:
        async with SimulatorProcess() as sim:
            data = Path(tmp) / "data"
            settings = load_settings(data_dir=data, database_url=url)
            store = await Store.open(settings)
            fleet: Fleet | None = None
            try:
                sellers = await sim.create_sellers(args.accounts)
                ids = await populate(store, sellers)
                seller_of = dict(zip(ids, (s["unb"] for s in sellers), strict=True))
                everyone = list(seller_of.values())
                cluster = ClusterStore(store.db, store.box)
                env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
                env.update(
                    XAR_DATABASE_URL=url,
                    XAR_DATA_DIR=str(data),
                    XAR_PLATFORM__WS_URL=sim.ws_url,
                    XAR_PLATFORM__MTOP_URL=sim.mtop_url,
                    XAR_PLATFORM__PASSPORT_URL=sim.passport_url,
                    XAR_CLUSTER__BUCKETS=str(buckets),
                    XAR_CLUSTER__LEASE_TTL=str(ttl),
                    XAR_CLUSTER__LEASE_MARGIN=str(margin),
                    XAR_CLUSTER__COMMAND_POLL="1",
                )
                (Path(tmp) / "logs").mkdir()
                fleet = Fleet(sim, env, Path(tmp) / "logs")
                result["steps"] = await _steps(fleet, cluster, seller_of, everyone, args)
            except BaseException:
                if fleet is not None:
                    print(fleet.tails(), file=sys.stderr)
                raise
            finally:
                if fleet is not None:
                    await fleet.close()
                await store.close()
    return result


async def _steps(
    fleet: Fleet, cluster: ClusterStore, seller_of: dict[str, str], everyone: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    ttl, buckets, n = args.ttl, args.buckets, args.workers
    steps: dict[str, Any] = {}
    watcher = asyncio.create_task(fleet.watch())
    try:
        # 1. N workers come up together: the first connection shows process start + settle + the first claim.
        names = [f"w{i}" for i in range(n)]
        started = time.monotonic()
        for name in names:
            await fleet.spawn(name)
        first = await fleet.until_any(timeout=120)
        await fleet.until_moved(set(everyone), set(), timeout=120)
        connect = time.monotonic() - started
        floor = first + len(everyone) / (n * EngineOptions().connect_rate)
        print(
            f"connect: {len(everyone)} accounts on {n} workers in {connect:.2f} s (floor {floor:.2f} s: first "
            f"connection at {first:.2f} s + accounts / (workers x connect rate); {ratio(connect, floor):.2f}x)"
        )
        steps["connect"] = {"seconds": connect, "first_s": first, "floor_s": floor, "ratio": ratio(connect, floor)}
        await asyncio.sleep(2 * ttl)  # a few renewals: a steady state
        reached = await fleet.ask(everyone, "在吗")
        answered = await fleet.until_answered(timeout=30)
        print(f"steady: {reached} messages answered in {answered:.2f} s")

        # 2. A newcomer joins: at most its fair share of buckets should move.
        before = await _owners(cluster)
        newcomer = f"w{n}"
        await fleet.spawn(newcomer)
        started = last_move = time.monotonic()
        seen = before
        # Settled once the newcomer holds buckets and nothing moved for a whole TTL.
        while time.monotonic() - started < 10 * ttl:
            now = await _owners(cluster)
            if now != seen:
                seen, last_move = now, time.monotonic()
            if newcomer in now.values() and time.monotonic() - last_move > ttl:
                break
            await asyncio.sleep(0.1)
        share_s = last_move - started
        after = await _owners(cluster)
        moved = sum(1 for b, owner in after.items() if owner != before.get(b))
        fair = -(-buckets // (n + 1))
        per_node = dict(Counter(after.values()))
        await fleet.until_moved(set(everyone), set(), timeout=30)
        print(
            f"join: {moved} of {buckets} buckets moved, beside the newcomer's fair share of {fair} "
            f"({ratio(moved, fair):.2f}x), the last {share_s:.2f} s after it started; buckets per node {per_node}"
        )
        steps["join"] = {"moved": moved, "fair_share": fair, "ratio": ratio(moved, fair), "seconds": share_s,
                         "per_node": per_node}  # fmt: skip
        names.append(newcomer)

        # 3. SIGKILL one: its accounts connect elsewhere once the leases expire (NOTIFY cannot help a dead node).
        owner_of = {a: after.get(bucket_of(a, buckets)) for a in seller_of}
        victim = names[0]
        victims = {seller_of[a] for a, owner in owner_of.items() if owner == victim}
        old = await fleet.connection_ids(victims)
        held = [x.expires_at for x in await cluster.leases() if x.owner == victim]
        fleet.signal(victim, signal.SIGKILL)
        killed, kill_t = datetime.now(UTC), time.monotonic()
        # The lease left when the worker died: a failover can be no faster than its latest expiry.
        left = max(((e if e.tzinfo else e.replace(tzinfo=UTC)) - killed).total_seconds() for e in held) if held else 0.0
        await fleet.ask([s for s in everyone if s not in victims], "还有货吗")  # the others never stop answering
        await fleet.until_moved(victims, old, timeout=ttl + 30)
        failover = time.monotonic() - kill_t
        print(
            f"SIGKILL: {len(victims)} accounts connected elsewhere in {failover:.2f} s (lease TTL {ttl:.1f} s: "
            f"{ratio(failover, ttl):.2f}x; its leases had up to {left:.2f} s left; target TTL + 5 s "
            f"{verdict(failover <= ttl + 5)})"
        )
        steps["sigkill"] = {"accounts": len(victims), "seconds": failover, "ttl_s": ttl, "lease_left_s": left,
                            "ratio_to_ttl": ratio(failover, ttl)}  # fmt: skip
        names.remove(victim)
        await fleet.ask(list(victims), "换人了吗")

        # 4. SIGTERM one right after a question to everyone: drain, release + NOTIFY, no waiting for expiry.
        now_owners = await _owners(cluster)
        owner_of = {a: now_owners.get(bucket_of(a, buckets)) for a in seller_of}
        leaver = names[0]
        leaving = {seller_of[a] for a, owner in owner_of.items() if owner == leaver}
        old = await fleet.connection_ids(leaving)
        await fleet.ask(everyone, "走之前问一句")
        started = time.monotonic()
        fleet.signal(leaver, signal.SIGTERM)
        while time.monotonic() - started < ttl + 30:
            if leaver not in (await _owners(cluster)).values():
                break
            await asyncio.sleep(0.05)
        released = time.monotonic() - started
        handover = released + await fleet.until_moved(leaving, old, timeout=ttl + 30)
        print(
            f"SIGTERM: buckets released in {released:.2f} s, {len(leaving)} accounts connected elsewhere in "
            f"{handover:.2f} s (lease TTL {ttl:.1f} s: {ratio(handover, ttl):.2f}x)"
        )
        steps["sigterm"] = {"accounts": len(leaving), "released_s": released, "seconds": handover, "ttl_s": ttl,
                            "ratio_to_ttl": ratio(handover, ttl)}  # fmt: skip

        # 5. Exactly once: every message that reached a connection, and a re-sent push is not answered again.
        await fleet.until_answered(timeout=30)
        await asyncio.sleep(1.0)
        replies = await fleet.replies()
        per_message = Counter(replies[c] for c in fleet.asked.values())
        twice = sum(k for c, k in per_message.items() if c > 1)
        lost = per_message.get(0, 0)
        print(
            f"replies: {len(fleet.asked)} messages that reached a connection: {per_message.get(1, 0)} answered "
            f"once, {twice} more than once, {lost} unanswered; {len(fleet.doubles)} sellers ever seen with two "
            f"live connections ({verdict(twice == 0 and not fleet.doubles)})"
        )
        steps["replies"] = {"asked": len(fleet.asked), "once": per_message.get(1, 0), "twice_or_more": twice,
                            "unanswered": lost, "double_connections": len(fleet.doubles)}  # fmt: skip
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return steps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--accounts", type=int, default=300)
    p.add_argument("--buckets", type=int, default=256)
    p.add_argument("--ttl", type=float, default=6.0, help="lease TTL in seconds (production default 15)")
    p.add_argument("--margin", type=float, default=1.5, help="lease margin in seconds (production default 3)")
    p.add_argument("--quick", action="store_true", help="2 workers x 60 accounts, 64 buckets")
    args = p.parse_args(argv)
    if args.quick:
        args.workers, args.accounts, args.buckets = 2, 60, 64
    quiet_logs()
    result = asyncio.run(run(args))
    print(f"wrote {write_result('failover', result)}")
    return result


if __name__ == "__main__":
    main()
