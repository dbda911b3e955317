"""The done-when test of scale-out, scaled to minutes: 3 worker processes, 300 accounts, one PostgreSQL.

Workers are real `python -m xianyu_autoreply worker` processes; the simulator runs in the test's loop and is the
judge: how many registered connections each seller has, and how many replies each buyer message got.
A message pushed while an account has no live connection reaches nobody (the platform does not queue it), so
"exactly once" is checked for every message that reached a connection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import AccountSettings, Store
from xianyu_autoreply.store.cluster import ClusterStore, bucket_of

ACCOUNTS = 300
WORKERS = 3
BUCKETS = 128
TTL = 6.0
MARGIN = 1.5
REPLY = "您好，在的"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@dataclass
class Judge:
    """Samples the simulator: any seller with two registered connections at once after `armed` is a violation."""

    sim: Simulator
    armed: bool = False
    doubles: list[tuple[float, str]] = field(default_factory=list)

    def live(self) -> Counter[str]:
        return Counter(c.seller for c in self.sim.hub.live() if c.registered)

    def connection_ids(self, sellers: set[str]) -> set[int]:
        return {c.id for c in self.sim.hub.live() if c.seller in sellers}

    def moved(self, sellers: set[str], old: set[int]) -> bool:
        """Every seller has exactly one registered connection, and none of them is from before."""
        fresh = Counter(c.seller for c in self.sim.hub.live() if c.seller in sellers and c.registered)
        return not self.connection_ids(sellers) & old and all(fresh.get(s) == 1 for s in sellers)

    async def watch(self) -> None:
        while True:
            if self.armed:
                now = time.monotonic()
                self.doubles.extend((now, seller) for seller, n in self.live().items() if n > 1)
            await asyncio.sleep(0.05)


async def until(check: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> float:
    """Poll until `check()` is truthy; returns the seconds it took."""
    start = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class Workers:
    """Worker subprocesses; stderr goes to a file per worker, shown when the test fails."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, asyncio.subprocess.Process] = {}

    async def spawn(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "xianyu_autoreply", "worker",
            env={**self.env, "XAR_CLUSTER__NODE_ID": name},
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        log.close()

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    async def wait(self, name: str, timeout: float = 20.0) -> int:
        return await asyncio.wait_for(self.procs[name].wait(), timeout)

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted(self.logs.glob("*.log"))
        )


class Fleet:
    """Accounts on the simulator, worker processes, and the questions asked: what every test here needs."""

    def __init__(self, sim: Simulator, store: Store, cluster: ClusterStore, pg_url: str, tmp_path: Path) -> None:
        self.sim, self.store, self.cluster, self.tmp_path = sim, store, cluster, tmp_path
        self.seller_of: dict[str, str] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
        env.update(
            XAR_DATABASE_URL=pg_url,
            XAR_DATA_DIR=str(tmp_path / "data"),  # the same secret.key as the test's store
            XAR_PLATFORM__WS_URL=sim.ws_url,
            XAR_PLATFORM__MTOP_URL=sim.mtop_url,
            XAR_PLATFORM__PASSPORT_URL=sim.passport_url,
            XAR_CLUSTER__BUCKETS=str(BUCKETS),
            XAR_CLUSTER__LEASE_TTL=str(TTL),
            XAR_CLUSTER__LEASE_MARGIN=str(MARGIN),
            XAR_CLUSTER__COMMAND_POLL="1",
        )
        (tmp_path / "logs").mkdir()
        self.workers = Workers(env, tmp_path / "logs")
        self.judge = Judge(sim)
        self.asked: list[tuple[str, str, str]] = []  # (account, chat_id, message_id) that reached a connection
        self.phase: dict[str, str] = {}  # message id -> the question (phase) it was asked in

    async def add_accounts(self, count: int) -> None:
        for i in range(count):
            seller = self.sim.create_seller()
            account_id = f"acc{i:03d}"
            await self.store.create_account(account_id, seller["cookie"])
            await self.store.put_settings(account_id, AccountSettings(default_reply=REPLY))
            self.seller_of[account_id] = seller["unb"]

    def everyone_once(self) -> bool:
        live = self.judge.live()
        return all(live.get(seller) == 1 for seller in self.seller_of.values())

    async def owners(self) -> dict[str, str | None]:
        holder = {lease.bucket: lease.owner for lease in await self.cluster.leases()}
        return {a: holder.get(bucket_of(a, BUCKETS)) for a in self.seller_of}

    def ask(self, accounts: list[str], text: str) -> list[str]:
        """Push one new buyer message to each account; the message ids that reached a connection."""
        reached = []
        for account in accounts:
            pushed = self.sim.push_message(self.seller_of[account], text)
            if pushed["delivered"]:
                self.asked.append((account, pushed["chat_id"], pushed["message_id"]))
                self.phase[pushed["message_id"]] = text
                reached.append(pushed["message_id"])
        return reached

    def replies(self, account: str, chat_id: str) -> int:
        return len(self.sim.sent(seller=self.seller_of[account], chat_id=chat_id))

    async def all_answered(self, *, timeout: float = 30, among: set[str] | None = None) -> None:
        pending = [(a, c, m) for a, c, m in self.asked if among is None or m in among]
        try:
            await until(lambda: all(self.replies(a, c) >= 1 for a, c, _ in pending), timeout=timeout)
        except AssertionError:
            await self.explain([(a, c, m) for a, c, m in pending if not self.replies(a, c)])
            raise

    async def explain(self, unanswered: list[tuple[str, str, str]]) -> None:
        """What became of unanswered messages: the log row (status, reason) and who runs the account."""
        where = await self.owners()
        for account, _chat_id, message_id in unanswered[:10]:
            rows = [m for m in await self.store.list_messages(account, limit=50) if m.message_id == message_id]
            seen = [(m.status, m.reply_reason) for m in rows]
            print(f"unanswered {account} on {where[account]}: {self.phase[message_id]} {message_id} -> {seen}")
        print(f"{len(unanswered)} of {len(self.asked)} unanswered: {Counter(self.phase[m] for *_, m in unanswered)}")

    def keep_logs(self) -> None:
        print(self.workers.tails())
        keep = os.environ.get("XAR_TEST_KEEP_LOGS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for log in (self.tmp_path / "logs").glob("*.log"):
                (Path(keep) / log.name).write_bytes(log.read_bytes())

    async def start(self, names: list[str]) -> float:
        for name in names:
            await self.workers.spawn(name)
        settle = await until(self.everyone_once, timeout=90)
        await asyncio.sleep(2 * TTL)  # a few renewals: nothing may move in a steady state
        assert self.everyone_once()
        return settle


@pytest.fixture
async def fleet(
    sim: Simulator, store: Store, cluster: ClusterStore, pg_url: str, tmp_path: Path
) -> AsyncIterator[Fleet]:
    made = Fleet(sim, store, cluster, pg_url, tmp_path)
    watcher = asyncio.create_task(made.judge.watch())
    try:
        yield made
    finally:
        watcher.cancel()
        await made.workers.close()


async def test_three_workers_share_300_accounts_and_fail_over_in_seconds(fleet: Fleet) -> None:
    sim, judge, workers = fleet.sim, fleet.judge, fleet.workers
    await fleet.add_accounts(ACCOUNTS)
    accounts = list(fleet.seller_of)
    try:
        settle = await fleet.start(["w0", "w1", "w2"])
        judge.armed = True
        placement = await fleet.owners()
        per_node = Counter(placement.values())
        assert set(per_node) == {"w0", "w1", "w2"}, per_node
        print(f"\nsettled in {settle:.1f}s; accounts per node {dict(per_node)}")

        # Steady state: every buyer message answered exactly once.
        assert len(fleet.ask(accounts, "在吗")) == ACCOUNTS
        await fleet.all_answered()

        # SIGKILL w0: its accounts run elsewhere within TTL + 5 s; the others never stop answering.
        victims = [a for a, node in placement.items() if node == "w0"]
        others = [a for a in accounts if a not in victims]
        victim_sellers = {fleet.seller_of[a] for a in victims}
        before = judge.connection_ids(victim_sellers)
        workers.signal("w0", signal.SIGKILL)
        assert len(fleet.ask(others, "还有货吗")) == len(others)
        failover = await until(lambda: judge.moved(victim_sellers, before), timeout=TTL + 5)
        print(f"SIGKILL: {len(victims)} accounts connected again elsewhere in {failover:.2f}s (TTL {TTL}s)")
        after = await fleet.owners()
        assert all(after[a] in ("w1", "w2") for a in victims)
        assert all(after[a] == placement[a] for a in others)  # sticky: nothing else moved
        await until(fleet.everyone_once, timeout=10)
        assert len(fleet.ask(victims, "换人了吗")) == len(victims)

        # SIGTERM w1 right after a question to every account: its sessions answer what they are handling, then
        # release + NOTIFY; the handover does not wait for the lease to expire, and nothing is answered twice.
        placement = await fleet.owners()
        leaving = {fleet.seller_of[a] for a, node in placement.items() if node == "w1"}
        before = judge.connection_ids(leaving)
        assert len(fleet.ask(accounts, "走之前问一句")) == ACCOUNTS

        async def keep_asking() -> None:  # buyers keep writing through the whole handover
            while True:
                fleet.ask(sorted(a for a, node in placement.items() if node == "w1"), "交接中还在问")
                # Every 0.5 s: ~200 messages a second into the handover. At 0.1 s each account got ~10 a second
                # against its send rate of 5, a backlog a loaded 2-core machine could not clear in the test's time.
                await asyncio.sleep(0.5)

        asking = asyncio.create_task(keep_asking())
        workers.signal("w1", signal.SIGTERM)

        async def w1_released() -> bool:
            return "w1" not in (await fleet.owners()).values()

        try:
            released = await until(w1_released, timeout=TTL + 5)
            await until(lambda: judge.moved(leaving, before), timeout=TTL + 10)
            await asyncio.sleep(0.5)
        finally:
            asking.cancel()
        handover = released + await until(
            lambda: judge.moved(leaving, before) and fleet.everyone_once(), timeout=TTL + 10
        )
        assert await workers.wait("w1") == 0
        print(f"SIGTERM: leases taken over in {released:.2f}s, {len(leaving)} accounts connected in {handover:.2f}s")
        assert released < TTL - MARGIN  # released and claimed at once, not left to expire
        assert (await fleet.owners()) == dict.fromkeys(accounts, "w2")
        assert len(fleet.ask(accounts, "最后一问")) == ACCOUNTS

        # Every message that reached a connection: answered exactly once, and a re-sent push is not answered again.
        await fleet.all_answered()
        for account, chat_id, message_id in fleet.asked[-20:]:
            sim.push_message(fleet.seller_of[account], "在吗", chat_id=chat_id, message_id=message_id)
        await asyncio.sleep(1.5)
        counts = Counter(fleet.replies(a, c) for a, c, _ in fleet.asked)
        assert counts == {1: len(fleet.asked)}, counts
        assert judge.doubles == [], judge.doubles[:5]
        print(f"{len(fleet.asked)} buyer messages that reached a connection, each answered exactly once")
    except BaseException:
        fleet.keep_logs()
        raise


async def test_a_paused_worker_sends_nothing_after_its_lease_and_a_fourth_worker_takes_a_fair_share(
    fleet: Fleet,
) -> None:
    judge, workers = fleet.judge, fleet.workers
    await fleet.add_accounts(90)
    try:
        await fleet.start(["w0", "w1", "w2"])
        placement = await fleet.owners()
        frozen = [a for a, node in placement.items() if node == "w0"]
        frozen_sellers = {fleet.seller_of[a] for a in frozen}

        # SIGSTOP w0 past its lease: its sockets stay open, so the simulator still pushes into them.
        paused_connections = judge.connection_ids(frozen_sellers)
        workers.signal("w0", signal.SIGSTOP)
        await asyncio.sleep(0.5)
        only_w0 = set(fleet.ask(frozen, "你还在吗"))  # reach nothing but the paused process
        await until(lambda: all(n >= 2 for s, n in judge.live().items() if s in frozen_sellers), timeout=TTL + 10)
        both = set(fleet.ask(frozen, "谁来回答"))  # reach the paused process and the new owner
        await fleet.all_answered(among=both)
        workers.signal("w0", signal.SIGCONT)
        # Awake, w0 reads every buffered push: its records are fenced, so it neither answers nor ACKs them; when
        # its connections close, the platform pushes them again to the new owner, which answers each once.
        await until(fleet.everyone_once, timeout=TTL + 10)
        await fleet.all_answered(among=only_w0)
        await asyncio.sleep(2.0)
        sent = {(a, c): fleet.sim.sent(seller=fleet.seller_of[a], chat_id=c) for a, c, m in fleet.asked if m in only_w0}
        late = [key for key, replies in sent.items() if any(r["connection"] in paused_connections for r in replies)]
        assert late == [], f"{len(late)} replies from the paused worker after it lost its lease"
        assert all(len(replies) == 1 for replies in sent.values()), sent
        print(f"\nSIGSTOP: {len(only_w0)} messages reached only the paused worker: each answered once by the new owner")
        assert all(fleet.replies(a, c) == 1 for a, c, m in fleet.asked if m in both)

        # A 4th worker: buckets rebalance, at most a fair share moves.
        await until(fleet.everyone_once, timeout=30)
        await asyncio.sleep(2 * TTL)
        before = {lease.bucket: lease.owner for lease in await fleet.cluster.leases()}
        await workers.spawn("w3")

        async def w3_has_its_share() -> bool:
            return Counter((await fleet.owners()).values()).get("w3", 0) > 0 and fleet.everyone_once()

        await until(w3_has_its_share, timeout=30)
        await asyncio.sleep(2 * TTL)
        leases = await fleet.cluster.leases()
        per_node = Counter(lease.owner for lease in leases)
        moved = sum(1 for lease in leases if lease.owner != before[lease.bucket])
        print(f"4th worker: buckets per node {dict(per_node)}; {moved} of {BUCKETS} buckets moved")
        assert set(per_node) == {"w0", "w1", "w2", "w3"}
        assert moved <= -(-BUCKETS // 4) + 2  # the newcomer's share, give or take rounding
        assert fleet.everyone_once()
        assert len(fleet.ask(list(fleet.seller_of), "最后")) == 90
        await fleet.all_answered(among={m for *_, m in fleet.asked if m not in only_w0})
        assert Counter(fleet.replies(a, c) for a, c, m in fleet.asked if m not in only_w0) == {
            1: len(fleet.asked) - len(only_w0)
        }
    except BaseException:
        fleet.keep_logs()
        raise
