"""Thousands of accounts in one engine: start-up time, idle memory and CPU, update-cookie latency under load.

    python -m bench engine [--quick]
    python -m bench.engine [--accounts 5000] [--idle-seconds 30] [--load-rate 100] [--updates 60] [--quick]

The simulator runs in its own process; the engine (`AccountScheduler` on a temp SQLite holding one account per
seller, default `EngineOptions`, heartbeat every 15 s) runs in this one. Figures:

- time from `engine.start()` to every account `connected`, beside the floor the configured connect rate allows;
- during start-up, `(t_s, connected, rss_kib)` every 0.5 s (raw `VmRSS`, nothing forced) and its slope in KiB per
  connected account, drawn in `bench/results/engine.png` (RSS over accounts);
- idle RSS per connected account beyond the process before the engine started (`VmRSS`, after `gc` and
  `malloc_trim`), with `--tracemalloc` the biggest allocation sites per account;
- idle CPU of the engine (and of the simulator) in % of one core over `--idle-seconds`, all accounts heartbeating;
- update-cookie latency under a steady buyer load: `update_cookie` of a random account until it is connected
  again, beside the platform's own connect time (token over MTOP + WebSocket upgrade + `/reg` + `ackDiff` by a
  bare client) measured in the same load, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import websockets

from xianyu_autoreply.engine.scheduler import AccountScheduler, EngineOptions
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import ConnectionState
from xianyu_autoreply.protocol import FrameKind, ack_diff_frame, encode_frame, new_device_id, parse_frame, reg_frame

from .harness import (
    Bed,
    Meter,
    SimulatorProcess,
    StartupSampler,
    add_loop_option,
    engine_on,
    environment,
    quiet_logs,
    report,
    run_on,
    settle_memory,
    startup_rss_fit,
    summary_ms,
    test_bed,
    verdict,
    wait_connected,
)
from .plots import rss_over_accounts
from .session import _Jar


async def bare_connect_ms(sim: SimulatorProcess, mtop: MtopClient, seller: dict[str, str]) -> float:
    """The platform's own connect time: token, upgrade, `/reg`, `ackDiff` on a plain client (then closed)."""
    started = time.perf_counter()
    device_id = new_device_id(seller["unb"])
    token = await mtop.fetch_token(_Jar(seller["cookie"]), device_id=device_id)
    ws = await websockets.connect(
        sim.ws_url, additional_headers={"Cookie": seller["cookie"]}, compression=None, ping_interval=None
    )
    for frame in (reg_frame(token=token, device_id=device_id), ack_diff_frame()):
        await ws.send(encode_frame(frame))
        while parse_frame(await ws.recv()).kind is not FrameKind.RESPONSE:
            pass
    elapsed = (time.perf_counter() - started) * 1000
    await ws.close()
    return elapsed


async def update_cookie_ms(engine: AccountScheduler, account_id: str, cookie: str) -> float:
    """`update_cookie` until the account's new session is connected, in milliseconds."""
    started = time.perf_counter()
    await engine.update_cookie(account_id, cookie)
    while True:
        session = engine.session(account_id)
        if session is not None and session.state is ConnectionState.CONNECTED:
            return (time.perf_counter() - started) * 1000
        await asyncio.sleep(0.001)


async def quiet(sim_pid: int, *, below_pct: float = 25.0, windows: int = 3, timeout: float = 300.0) -> float:
    """Seconds until this process used under `below_pct` of a core in `windows` consecutive 1 s windows."""
    started = time.monotonic()
    calm = 0
    while calm < windows and time.monotonic() - started < timeout:
        meter = Meter(sim_pid)
        await asyncio.sleep(1.0)
        calm = calm + 1 if meter.read()["engine_core_pct"] < below_pct else 0
    return time.monotonic() - started


async def measure(bed: Bed, spare: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    n = len(bed.account_ids)
    options = EngineOptions()
    result: dict[str, Any] = {"connect_rate": options.connect_rate, "floor_s": n / options.connect_rate}
    rss_empty = settle_memory()
    if args.tracemalloc:
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
    engine = engine_on(bed, options)
    last_print = [0.0]

    def progress(count: int) -> None:
        if time.monotonic() - last_print[0] >= 5:
            last_print[0] = time.monotonic()
            print(f"  {count:>6,}/{n:,} connected", file=sys.stderr)

    meter = Meter(bed.sim.pid)
    sampler = StartupSampler(engine, every=0.5)
    started = time.perf_counter()
    sampler.start(started)
    await engine.start()
    try:
        result["start_call_s"] = time.perf_counter() - started
        result["all_connected_s"] = result["start_call_s"] + await wait_connected(
            engine, n, timeout=args.connect_timeout, on_progress=progress
        )
        result["startup_cpu"] = meter.read()
        result["startup_samples"] = await sampler.stop()
        result["startup_rss_slope_kib"] = startup_rss_fit(result["startup_samples"])[0]
        # Start-up goes on after the last connect: every token fetch's refreshed cookie is written back. Idle
        # is measured once that is over, and how long it took is a figure of its own.
        result["busy_after_connected_s"] = await quiet(bed.sim.pid)
        rss_connected = settle_memory()
        result["rss_empty_kib"] = rss_empty
        result["rss_connected_kib"] = rss_connected
        result["rss_per_account_kib"] = (rss_connected - rss_empty) / n
        if args.tracemalloc:
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            top = after.compare_to(before, "filename")[:15]
            result["tracemalloc_per_account_b"] = {
                str(s.traceback[0].filename).split("site-packages/")[-1]: s.size_diff / n for s in top
            }
        heartbeats = sum(s.stats.heartbeats for a in engine.account_ids() if (s := engine.session(a)) is not None)
        meter = Meter(bed.sim.pid)
        await asyncio.sleep(args.idle_seconds)
        result["idle"] = meter.read()
        result["idle"]["heartbeats"] = (
            sum(s.stats.heartbeats for a in engine.account_ids() if (s := engine.session(a)) is not None) - heartbeats
        )
        result["update_cookie"] = await cookie_updates(engine, bed, spare, args)
    finally:
        await sampler.stop()
        await engine.stop()
    return result


async def cookie_updates(
    engine: AccountScheduler, bed: Bed, spare: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    rng = random.Random(7)
    mtop = MtopClient(mtop_url=bed.sim.mtop_url, passport_url=bed.sim.passport_url)
    cookies = dict(zip(bed.account_ids, (s["cookie"] for s in bed.sellers), strict=True))
    updates: list[float] = []
    connects: list[float] = []
    duration = args.updates * 0.25 + 30
    await bed.sim.start_load(args.load_rate, duration, [s["unb"] for s in bed.sellers])
    await bed.sim.latencies(reset=True)
    meter = Meter(bed.sim.pid)
    try:
        await asyncio.sleep(2)
        for n in range(args.updates):
            connects.append(await bare_connect_ms(bed.sim, mtop, spare))
            account_id = rng.choice(bed.account_ids)
            updates.append(await update_cookie_ms(engine, account_id, f"{cookies[account_id]}; xar_bench={n}"))
            await asyncio.sleep(0.2)
    finally:
        cpu = meter.read()
        await bed.sim.stop_load()
        await mtop.aclose()
    replies = summary_ms(await bed.sim.latencies(reset=True))
    return {"load_rate": args.load_rate, "update_ms": summary_ms(updates), "bare_connect_ms": summary_ms(connects),
            "cpu": cpu, "reply_latency_ms": replies}  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logs()
    result: dict[str, Any] = {"environment": environment(), "settings": vars(args)}
    async with test_bed(args.accounts + 1) as bed:
        spare = bed.sellers.pop()  # the reference client's own seller, not held by the engine
        spare_id = bed.account_ids.pop()
        await bed.store.delete_account(spare_id)
        print(f"engine bench: {args.accounts:,} accounts")
        result.update(await measure(bed, spare, args))
    return result


def summary(result: dict[str, Any]) -> str:
    s, idle, upd = result["settings"], result["idle"], result["update_cookie"]
    n = s["accounts"]
    u, c = upd["update_ms"], upd["bare_connect_ms"]
    lines = [
        f"{n:,} accounts on one engine, heartbeat every 15 s, SQLite, simulator in its own process",
        f"{'start -> all connected':34} {result['all_connected_s']:8.1f} s   (connect rate "
        f"{result['connect_rate']:,.0f}/s allows {result['floor_s']:.1f} s; start() itself "
        f"{result['start_call_s']:.1f} s; target <= 60 s for 5,000: {verdict(result['all_connected_s'] <= 60)})",
        f"{'idle RSS per connected account':34} {result['rss_per_account_kib']:8.1f} KiB (process "
        f"{result['rss_empty_kib'] / 1024:,.0f} MiB before, {result['rss_connected_kib'] / 1024:,.0f} MiB after; "
        f"target <= 64 KiB: {verdict(result['rss_per_account_kib'] <= 64)})",
        f"{'busy after the last connect':34} {result['busy_after_connected_s']:8.1f} s (refreshed cookies written "
        "back; idle is measured after it)",
        f"{'RSS slope while connecting':34} {result['startup_rss_slope_kib']:8.1f} KiB per connected account "
        f"(raw VmRSS, {len(result['startup_samples'])} samples; garbage not yet collected included)",
        f"{'idle CPU, engine':34} {idle['engine_core_pct']:8.2f} % of one core over {idle['wall_s']:.0f} s "
        f"({idle['heartbeats']:,} heartbeats; target <= 10 %: {verdict(idle['engine_core_pct'] <= 10)}); "
        f"simulator {idle['sim_core_pct']:.2f} %",
        f"update cookie under {upd['load_rate']:,.0f} msg/s: p50 {u['p50']:7.1f} ms  p99 {u['p99']:7.1f} ms  "
        f"({u['count']} updates)",
        f"{'  platform connect (bare client)':34} p50 {c['p50']:7.1f} ms  p99 {c['p99']:7.1f} ms  (reference)",
        f"  update p99 - connect p99 = {u['p99'] - c['p99']:.1f} ms (target <= 100 ms: "
        f"{verdict(u['p99'] - c['p99'] <= 100)}); ratio p99 {u['p99'] / c['p99']:.2f}x",
    ]
    if "tracemalloc_per_account_b" in result:
        lines.append("tracemalloc, bytes per account by file:")
        lines += [f"  {v:9,.0f}  {k}" for k, v in result["tracemalloc_per_account_b"].items()]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """RSS over connected accounts during start-up, the settled before/after figures beside it."""
    n = result["settings"]["accounts"]
    title = (
        f"engine start-up: {n:,} accounts, connect rate {result['connect_rate']:,.0f}/s, all connected in "
        f"{result['all_connected_s']:.1f} s; settled: {result['rss_per_account_kib']:.1f} KiB per account"
        + (" (tracemalloc on: its own memory included)" if result["settings"].get("tracemalloc") else "")
    )
    settled = (
        ("settled (gc + malloc_trim): before start", 0, result["rss_empty_kib"]),
        ("settled: all connected, start-up work over", n, result["rss_connected_kib"]),
    )
    return rss_over_accounts(result["startup_samples"], path, settled=settled, title=title)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.engine", description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=5000)
    p.add_argument("--idle-seconds", type=float, default=30.0)
    p.add_argument("--load-rate", type=float, default=100.0, help="buyer msg/s while cookies are updated")
    p.add_argument("--updates", type=int, default=60, help="cookie updates (each beside one bare connect)")
    p.add_argument("--connect-timeout", type=float, default=300.0, help="give up waiting for all connected")
    p.add_argument("--tracemalloc", action="store_true", help="print allocation sites per account (slower)")
    p.add_argument("--quick", action="store_true", help="1,000 accounts, 10 s idle, 20 updates")
    add_loop_option(p)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.accounts, args.idle_seconds, args.updates = min(args.accounts, 1000), 10.0, 20
    return report("engine", run_on(run(args), args.loop), summary, plot)


if __name__ == "__main__":
    main()
