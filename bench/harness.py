"""What the wire benchmarks share: the simulator in its own process, percentiles, CPU and RSS from `/proc`, a
populated SQLite store, engines on it, and the JSON result file.

The simulator runs as `python -m xianyu_autoreply simulator` in a child process, so the engine under test (in
this process) and the platform never share a core's time slices or an event loop. CPU figures are process CPU
time (user + system, all threads) from `os.times()` for this process and `/proc/<pid>/stat` for the child.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, get_args

import httpx
import structlog

from xianyu_autoreply import runtime
from xianyu_autoreply.config import Settings, load_settings
from xianyu_autoreply.engine.scheduler import AccountScheduler, EngineOptions
from xianyu_autoreply.platform.session import ConnectionState
from xianyu_autoreply.runtime import EventLoopChoice
from xianyu_autoreply.store import AccountSettings, Store

RESULTS = Path(__file__).resolve().parent / "results"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_REPLY = "在的，亲，直接拍就行"


def quiet_logs() -> None:
    """Warnings and errors only: a bench must not spend its CPU formatting info lines."""
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# --- figures --------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank, as HdrHistogram reports it; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """Count, p50/p90/p99/p99.9 and max of latencies in milliseconds."""
    return {
        "count": len(samples),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "p999": percentile(samples, 99.9),
        "max": max(samples) if samples else math.nan,
    }


def ratio(value: float, reference: float) -> float:
    return value / reference if reference else math.nan


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope and intercept of `ys` over `xs`; NaNs when fewer than two distinct `xs`."""
    if len(xs) < 2:
        return math.nan, math.nan
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if not spread:
        return math.nan, math.nan
    k = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
    return k, mean_y - k * mean_x


def startup_rss_fit(samples: Sequence[Mapping[str, float]]) -> tuple[float, float]:
    """KiB of RSS per connected account (and the intercept) over start-up samples once connecting began.

    Samples with no account connected yet are left out: they are the engine loading its store, a fixed cost.
    """
    connecting = [s for s in samples if s["connected"] > 0]
    return linear_fit([s["connected"] for s in connecting], [s["rss_kib"] for s in connecting])


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def cpu_self() -> float:
    """CPU seconds (user + system, every thread) this process has used."""
    t = os.times()
    return t.user + t.system


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of another process, from `/proc/<pid>/stat`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size in KiB (`VmRSS` of `/proc/<pid>/status`)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS line")


def settle_memory() -> int:
    """Collect garbage, hand freed arenas back where the allocator can, and read RSS (KiB)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_kib()


T = TypeVar("T")
LOOPS = get_args(EventLoopChoice)


def add_loop_option(p: argparse.ArgumentParser) -> None:
    """`--loop`: the bench process's event loop. Default `auto` = what `serve` runs on (uvloop when installed);
    every reference client in the same process (and the RTT probe process) runs on the same loop."""
    p.add_argument("--loop", choices=LOOPS, default="auto", help="event loop (auto: uvloop when installed)")


def run_on(main: Coroutine[Any, Any, T], loop: EventLoopChoice) -> T:
    """`asyncio.run(main)` on the chosen loop (`xianyu_autoreply.runtime`, as the service's commands)."""
    return runtime.run(main, loop=loop)


def loop_in_use() -> str:
    """`uvloop` or `asyncio`: the running loop's kind (for results and for child processes)."""
    try:
        module = type(asyncio.get_running_loop()).__module__
    except RuntimeError:
        return "asyncio"
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def environment() -> dict[str, Any]:
    import websockets

    return {
        "event_loop": loop_in_use(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "websockets": websockets.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def report(
    name: str,
    result: dict[str, Any],
    summary: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], Path | None],
) -> dict[str, Any]:
    """Print a bench's summary, write `bench/results/<name>.json` and its plot `<name>.png` beside it."""
    print(summary(result))
    print(f"wrote {write_result(name, result)}")
    if (png := plot(result, RESULTS / f"{name}.png")) is not None:
        print(f"wrote {png}")
    return result


def write_result(name: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write `bench/results/<name>.json` (or `out`) and return the path."""
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


class Meter:
    """CPU of this process and the simulator over one interval."""

    def __init__(self, sim_pid: int) -> None:
        self.sim_pid = sim_pid
        self.wall = time.perf_counter()
        self.cpu = cpu_self()
        self.sim_cpu = cpu_of(sim_pid)

    def read(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        return {
            "wall_s": wall,
            "engine_cpu_s": cpu_self() - self.cpu,
            "sim_cpu_s": cpu_of(self.sim_pid) - self.sim_cpu,
            "engine_core_pct": 100 * (cpu_self() - self.cpu) / wall,
            "sim_core_pct": 100 * (cpu_of(self.sim_pid) - self.sim_cpu) / wall,
        }


# --- the simulator in its own process ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimulatorProcess:
    """`python -m xianyu_autoreply simulator` on a free loopback port, driven through its control API."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/"
        self.mtop_url = f"{self.base}/h5/"
        self.passport_url = f"{self.base}/"
        self.proc: asyncio.subprocess.Process | None = None
        self.http = httpx.AsyncClient(
            base_url=f"{self.base}/_sim/", timeout=60.0, limits=httpx.Limits(max_connections=32), trust_env=False
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> SimulatorProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "xianyu_autoreply", "simulator", "--port", str(self.port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "200"},
        )
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await self.http.get("stats")).status_code == 200:
                    return self
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not come up")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        if self.proc is not None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        answer = await self.http.request(method, path, json=body, params=params or None)
        answer.raise_for_status()
        return answer.json()

    async def create_sellers(self, count: int, *, prefix: int = 2_200_000_000_000) -> list[dict[str, str]]:
        """`count` sellers with fixed ids (`prefix + n`), each with one item (so buyers write about something)."""
        sem = asyncio.Semaphore(16)

        async def one(n: int) -> dict[str, str]:
            async with sem:
                seller: dict[str, str] = await self.call("POST", "sellers", {"unb": str(prefix + n), "nick": f"s{n}"})
                await self.call("POST", "items", {"seller": seller["unb"], "title": "九成新耳机", "price": "99"})
                return seller

        return list(await asyncio.gather(*(one(n) for n in range(count))))

    async def start_load(self, rate: float, seconds: float, sellers: Sequence[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"rate": rate, "seconds": seconds}
        if sellers is not None:
            body["sellers"] = list(sellers)
        result: dict[str, Any] = await self.call("POST", "load", body)
        return result

    async def load_status(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self.call("GET", "load")
        return result

    async def stop_load(self) -> None:
        await self.call("DELETE", "load")

    async def latencies(self, *, reset: bool = False, since: int = 0) -> list[float]:
        """Reply latencies (ms, simulator's clock) since the last reset, after the first `since` of them; `reset`
        starts a new window. Polling readers pass `since` so that the bench process (whose CPU is measured)
        parses only the new samples."""
        result = await self.call("GET", "latency", reset="1" if reset else "0", since=str(since))
        return list(result["samples_ms"])

    async def ack_latencies(self, *, reset: bool = False) -> list[float]:
        """Push -> ACK times (ms, simulator's clock) of every push since the last reset."""
        result = await self.call("GET", "latency", kind="ack", reset="1" if reset else "0")
        return list(result["samples_ms"])

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "stats")
        return result

    async def settle(self, *, quiet: float = 1.5, timeout: float = 180.0) -> float:
        """Wait until no seller has sent anything for `quiet` seconds (an earlier load's backlog answered).

        Returns the seconds waited. Without it, a step that follows a load the engine could not keep up with
        measures the previous backlog, not its own load (the peak steps used to print 0 replies/s).
        """
        started = last_change = time.monotonic()
        sent = (await self.stats())["sent"]
        while time.monotonic() - last_change < quiet and time.monotonic() - started < timeout:
            await asyncio.sleep(0.25)
            now_sent = (await self.stats())["sent"]
            if now_sent != sent:
                sent, last_change = now_sent, time.monotonic()
        return time.monotonic() - started

    async def run_load(self, rate: float, seconds: float, sellers: Sequence[str] | None = None) -> dict[str, Any]:
        """Run a load to its end (plus a short drain) and return its final status."""
        await self.start_load(rate, seconds, sellers)
        await asyncio.sleep(seconds)
        while True:
            status = await self.load_status()
            if status is None or not status["running"]:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the last replies land
        return status or {}


# --- a store full of accounts, and engines on it ----------------------------------------------------------------


def bench_settings(sim: SimulatorProcess, data_dir: Path, *, heartbeat: float = 15.0) -> Settings:
    return load_settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'bench.db'}",
        platform={"ws_url": sim.ws_url, "mtop_url": sim.mtop_url, "passport_url": sim.passport_url},
        session={"heartbeat_interval": heartbeat, "heartbeat_timeout": 2 * heartbeat},
    )


async def populate(store: Store, sellers: Sequence[dict[str, str]], *, progress: bool = True) -> list[str]:
    """One account per seller with a default reply (so every buyer message is answered); returns the ids."""
    ids = []
    started = time.perf_counter()
    for n, seller in enumerate(sellers, 1):
        account_id = f"acct{n:05d}"
        await store.create_account(account_id, seller["cookie"])
        await store.put_settings(account_id, AccountSettings(default_reply=_REPLY))
        ids.append(account_id)
        if progress and n % 1000 == 0:
            print(f"  populated {n:,} accounts ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return ids


@dataclass
class Bed:
    """A simulator process, sellers on it, and a store with one account each."""

    sim: SimulatorProcess
    settings: Settings
    store: Store
    sellers: list[dict[str, str]]
    account_ids: list[str]


@contextlib.asynccontextmanager
async def test_bed(accounts: int, *, heartbeat: float = 15.0) -> AsyncIterator[Bed]:
    """Simulator subprocess + `accounts` sellers + a temp SQLite store holding one account per seller."""
    with tempfile.TemporaryDirectory(prefix="xar-bench-") as tmp:
        async with SimulatorProcess() as sim:
            sellers = await sim.create_sellers(accounts)
            settings = bench_settings(sim, Path(tmp), heartbeat=heartbeat)
            store = await Store.open(settings)
            try:
                ids = await populate(store, sellers)
                yield Bed(sim, settings, store, sellers, ids)
            finally:
                await store.close()


def engine_on(bed: Bed, options: EngineOptions | None = None) -> AccountScheduler:
    return AccountScheduler(store=bed.store, settings=bed.settings, options=options or EngineOptions())


def connected_count(engine: AccountScheduler) -> int:
    return sum(
        1
        for account_id in engine.account_ids()
        if (s := engine.session(account_id)) is not None and s.state is ConnectionState.CONNECTED
    )


async def wait_connected(
    engine: AccountScheduler, total: int, *, timeout: float, on_progress: Callable[[int], None] | None = None
) -> float:
    """Seconds until `total` sessions are connected (polling every 50 ms); raises after `timeout`."""
    started = time.perf_counter()
    while True:
        count = connected_count(engine)
        if on_progress is not None:
            on_progress(count)
        if count >= total:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            from collections import Counter

            states = Counter((st.lifecycle.value, st.connection, st.last_error) for st in engine.states())
            raise TimeoutError(f"only {count}/{total} connected after {timeout:.0f} s: {states.most_common(8)}")
        await asyncio.sleep(0.05)


class StartupSampler:
    """`{t_s, connected, rss_kib}` about every `every` seconds while an engine starts, in a background task.

    RSS is `VmRSS` read as it is (one small `/proc` read), never `settle_memory()`: its gc + malloc_trim would
    perturb the start-up being measured. The curve so includes garbage not yet collected; the settled figure is
    taken once start-up is over.
    """

    def __init__(self, engine: AccountScheduler, *, every: float = 0.5) -> None:
        self.engine = engine
        self.every = every
        self.started = time.perf_counter()
        self.samples: list[dict[str, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, started: float | None = None) -> None:
        """Sample from now on; `t_s` counts from `started` (a `perf_counter()` reading), by default now."""
        self.started = time.perf_counter() if started is None else started
        self._task = asyncio.create_task(self._run())

    def sample(self) -> None:
        """Record one sample now (also callable between the timed ones)."""
        t_s = round(time.perf_counter() - self.started, 3)
        self.samples.append({"t_s": t_s, "connected": connected_count(self.engine), "rss_kib": rss_kib()})

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    async def stop(self) -> list[dict[str, float]]:
        """Stop sampling, take one last sample (start-up's end) and return them all; again returns the same."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self.sample()
        return self.samples
