"""Soak: the engine's memory after N minutes of steady buyer load beside its memory after the first minute.

    python -m bench soak [--quick]
    python -m bench.soak [--accounts 1000] [--rate 200] [--minutes 10] [--quick]

The simulator (own process) pushes `--rate` buyer messages a second, each into a new chat, spread over every
account; the engine (`AccountScheduler`, SQLite, default reply on every account) answers them. RSS (`VmRSS`,
after `gc` + `malloc_trim`) is sampled every 30 s; the figure is the last sample beside the one at the end of the
first minute, as a ratio. Reply latency per 30 s window is recorded too, to show the engine kept up; both are drawn
over time in `bench/results/soak.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import tracemalloc
from pathlib import Path
from typing import Any

from xianyu_autoreply.engine.gc_tuning import freeze_long_lived

from .harness import (
    Meter,
    add_loop_option,
    engine_on,
    environment,
    quiet_logs,
    report,
    run_on,
    settle_memory,
    summary_ms,
    test_bed,
    verdict,
    wait_connected,
)
from .plots import rss_and_latency_over_time


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logs()
    result: dict[str, Any] = {"environment": environment(), "settings": vars(args)}
    seconds = args.minutes * 60
    async with test_bed(args.accounts) as bed:
        engine = engine_on(bed)
        await engine.start()
        try:
            await wait_connected(engine, args.accounts, timeout=300)
            result["gc_frozen_objects"] = freeze_long_lived()  # as `serve` does after start-up
            result["rss_connected_kib"] = settle_memory()
            print(f"soak: {args.accounts:,} accounts, {args.rate:,.0f} msg/s for {args.minutes:g} min")
            await bed.sim.latencies(reset=True)
            await bed.sim.start_load(args.rate, seconds, [s["unb"] for s in bed.sellers])
            started = time.monotonic()
            meter = Meter(bed.sim.pid)
            samples: list[dict[str, Any]] = []
            snapshot: tracemalloc.Snapshot | None = None
            if args.tracemalloc:
                tracemalloc.start(1)
            while (elapsed := time.monotonic() - started) < seconds:
                await asyncio.sleep(min(args.sample_every, seconds - elapsed))
                lat = summary_ms(await bed.sim.latencies(reset=True))
                cpu = meter.read()
                meter = Meter(bed.sim.pid)
                sample = {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_kib": settle_memory(),
                    "replies": lat["count"],
                    "latency_p50_ms": lat["p50"],
                    "latency_p99_ms": lat["p99"],
                    "engine_core_pct": cpu["engine_core_pct"],
                }
                samples.append(sample)
                if args.tracemalloc and snapshot is None and sample["t_s"] >= 60:
                    snapshot = tracemalloc.take_snapshot()
                print(
                    f"  {sample['t_s']:6.0f} s  RSS {sample['rss_kib'] / 1024:7.1f} MiB  "
                    f"{lat['count'] / args.sample_every:6.0f} replies/s  p50 {lat['p50']:7.1f} ms  "
                    f"p99 {lat['p99']:7.1f} ms  engine {cpu['engine_core_pct']:3.0f} %"
                )
            await bed.sim.stop_load()
            if snapshot is not None:
                result["tracemalloc_growth_kib"] = growth_sites(snapshot, tracemalloc.take_snapshot())
                tracemalloc.stop()
        finally:
            await engine.stop()
    first = next(s for s in samples if s["t_s"] >= min(60, samples[-1]["t_s"]))
    last = samples[-1]
    result["samples"] = samples
    result["first_minute_rss_kib"] = first["rss_kib"]
    result["end_rss_kib"] = last["rss_kib"]
    result["growth_pct"] = 100 * (last["rss_kib"] - first["rss_kib"]) / first["rss_kib"]
    return result


def growth_sites(first: tracemalloc.Snapshot, last: tracemalloc.Snapshot, top: int = 15) -> dict[str, float]:
    """The lines whose live allocations grew most between the two snapshots (KiB)."""
    stats = last.compare_to(first, "lineno")[:top]
    return {
        f"{str(s.traceback[0].filename).split('site-packages/')[-1]}:{s.traceback[0].lineno}": s.size_diff / 1024
        for s in stats
    }


def summary(result: dict[str, Any]) -> str:
    s = result["settings"]
    g = result["growth_pct"]
    lines = [f"  {kib:9,.0f} KiB  {site}" for site, kib in result.get("tracemalloc_growth_kib", {}).items()]
    if lines:
        lines.insert(0, "tracemalloc, growth from the first minute to the end, by line:")
    return "\n".join(
        [
            *lines,
            f"soak: {s['accounts']:,} accounts, {s['rate']:,.0f} msg/s for {s['minutes']:g} min",
            f"RSS after the first minute {result['first_minute_rss_kib'] / 1024:8.1f} MiB (reference)",
            f"RSS at the end             {result['end_rss_kib'] / 1024:8.1f} MiB = "
            f"{result['end_rss_kib'] / result['first_minute_rss_kib']:.3f}x ({g:+.1f} %; target within 5 %: "
            f"{verdict(abs(g) <= 5)})",
        ]
    )


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """RSS over time against the first minute's, and reply latency per window (the engine kept up)."""
    s = result["settings"]
    end_over_first = result["end_rss_kib"] / result["first_minute_rss_kib"]
    title = (
        f"soak: {s['accounts']:,} accounts, {s['rate']:,.0f} buyer msg/s for {s['minutes']:g} min; RSS at the end "
        f"{end_over_first:.3f}x the first minute's ({result['growth_pct']:+.1f} %)"
        + ("\n(tracemalloc on from the load's start: its own memory is in the RSS)" if s.get("tracemalloc") else "")
    )
    return rss_and_latency_over_time(
        result["samples"], path, rss_reference_kib=result["first_minute_rss_kib"], title=title
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sample-every", type=float, default=30.0, help="seconds between RSS samples")
    p.add_argument("--quick", action="store_true", help="200 accounts, 2 minutes, samples every 15 s")
    p.add_argument("--tracemalloc", action="store_true", help="print the lines whose allocations grew after minute 1")
    add_loop_option(p)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.accounts, args.minutes, args.sample_every = min(args.accounts, 200), min(args.minutes, 2.0), 15.0
    return report("soak", run_on(run(args), args.loop), summary, plot)


if __name__ == "__main__":
    main()
