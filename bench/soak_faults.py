"""Soak with faults: RSS, open file descriptors and asyncio tasks of the engine over N minutes of steady buyer load
while the platform misbehaves once a minute; flat after warm-up is the figure.

    python -m bench soak_faults [--quick]
    python -m bench.soak_faults [--accounts 200] [--rate 20] [--minutes 30] [--quick] [--plot docs/soak.png]

The simulator runs in its own process and pushes `--rate` buyer messages a second, each into a new chat, over every
account; the engine (`AccountScheduler`, production options, SQLite, a default reply on every account) answers
them. Every `--fault-every` seconds one fault hits every account, in turn: drop, close (1011), silence, expire_token,
slow, garbage, refuse. Every `--sample-every` seconds: RSS (after `gc` + `malloc_trim`), entries of
`/proc/self/fd`, `len(asyncio.all_tasks())` and connected sessions. The steady-state checkpoints are the samples
taken just before each fault (the previous one had a minute to heal) and the last one; the figures are the end
beside the first checkpoint after `--warmup` minutes, as ratios. At the end every chat of the load is counted in
the simulator's sent log: answered once, more than once (must be 0), not at all (messages that reached a
connection the fault was killing). Writes `bench/results/soak_faults.{json,csv}` and the plot.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from xianyu_autoreply.engine.scheduler import EngineOptions

from .harness import (
    RESULTS,
    connected_count,
    engine_on,
    environment,
    settle_memory,
    test_bed,
    wait_connected,
)
from .harness import write_result as write_json
from .plots import pyplot, save

DOCS_PLOT = Path(__file__).resolve().parent.parent / "docs" / "soak.png"


@dataclass(frozen=True, slots=True)
class FaultStep:
    """One injection: the simulator faults to set (on every seller) and a short label for the plot."""

    label: str
    faults: tuple[dict[str, Any], ...]


# `refuse` only bites on new upgrades, so a drop follows it; windows stay well under a minute so that each fault
# has time to heal before the next (the checkpoint just before it is then a steady state).
ROTATION: tuple[FaultStep, ...] = (
    FaultStep("drop", ({"kind": "drop"},)),
    FaultStep("close", ({"kind": "close", "code": 1011, "seconds": 5},)),
    FaultStep("silence", ({"kind": "silence", "seconds": 15},)),
    FaultStep("expire_token", ({"kind": "expire_token"},)),
    FaultStep("slow", ({"kind": "slow", "delay": 1.0, "seconds": 10},)),
    FaultStep("garbage", ({"kind": "garbage"},)),
    FaultStep("refuse", ({"kind": "refuse", "seconds": 10}, {"kind": "drop"})),
)


def open_fds() -> int:
    """Entries of `/proc/self/fd`: sockets, the SQLite files, pipes — whatever a leak would pile up."""
    return len(os.listdir("/proc/self/fd"))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # Errors only: every injected fault makes each account log a reconnect warning, by design.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    result: dict[str, Any] = {"environment": environment(), "settings": {k: str(v) for k, v in vars(args).items()}}
    seconds = args.minutes * 60
    samples: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    async with test_bed(args.accounts, heartbeat=args.heartbeat) as bed:
        engine = engine_on(bed, EngineOptions())
        await engine.start()
        try:
            await wait_connected(engine, args.accounts, timeout=300)
            print(
                f"soak with faults: {args.accounts:,} accounts, {args.rate:,.0f} msg/s, a fault every "
                f"{args.fault_every:g} s for {args.minutes:g} min",
                flush=True,
            )
            await bed.sim.start_load(args.rate, seconds, [s["unb"] for s in bed.sellers])
            started = time.monotonic()
            next_sample, next_fault, step = 0.0, args.fault_every, 0
            open_fault: dict[str, Any] | None = None
            while (elapsed := time.monotonic() - started) < seconds:
                connected = connected_count(engine)
                if open_fault is not None:  # time to heal: every account connected again, once some were not
                    open_fault["min_connected"] = min(open_fault["min_connected"], connected)
                    open_fault["felt"] = open_fault["felt"] or connected < args.accounts
                    if open_fault["felt"] and connected >= args.accounts and "healed_s" not in open_fault:
                        open_fault["healed_s"] = round(elapsed - open_fault["t_s"], 1)
                if elapsed >= next_sample or elapsed >= next_fault:
                    sample = {
                        "t_s": round(elapsed, 1),
                        "rss_kib": settle_memory(),
                        "fds": open_fds(),
                        "tasks": len(asyncio.all_tasks()),
                        "connected": connected,
                        "replies": (await bed.sim.stats())["sent"],
                        "checkpoint": elapsed >= next_fault,
                    }
                    samples.append(sample)
                    next_sample = elapsed + args.sample_every
                    if sample["checkpoint"] or len(samples) % 6 == 0:
                        print(
                            f"  {sample['t_s']:6.0f} s  RSS {sample['rss_kib'] / 1024:6.1f} MiB  fds {sample['fds']:4d}"
                            f"  tasks {sample['tasks']:5d}  connected {connected:4d}  replies {sample['replies']:7d}",
                            flush=True,
                        )
                if elapsed >= next_fault:
                    if open_fault is not None and not open_fault["felt"]:
                        open_fault["healed_s"] = 0.0  # no session ever dropped (slow, garbage)
                    fault = ROTATION[step % len(ROTATION)]
                    for spec in fault.faults:
                        await bed.sim.call("POST", "faults", spec)
                    open_fault = {
                        "t_s": round(elapsed, 1),
                        "kind": fault.label,
                        "min_connected": connected,
                        "felt": False,
                    }
                    faults.append(open_fault)
                    print(f"  {elapsed:6.0f} s  fault: {fault.label}", flush=True)
                    step += 1
                    next_fault += args.fault_every
                await asyncio.sleep(0.5)
            samples[-1]["checkpoint"] = True  # the end is the last steady-state figure
            load = await bed.sim.load_status() or {}  # before the stop, which forgets the run
            await bed.sim.stop_load()
            await bed.sim.call("DELETE", "faults")
            await bed.sim.settle(quiet=5.0, timeout=120)
            sent = await bed.sim.call("GET", "sent")
        finally:
            await engine.stop()
    per_chat = Counter(m["chat_id"] for m in sent)
    once = sum(1 for n in per_chat.values() if n == 1)
    result.update(
        samples=samples,
        faults=faults,
        load=load,
        replies={
            "buyer_messages_delivered": load.get("sent", 0),
            "answered_once": once,
            "answered_more_than_once": sum(1 for n in per_chat.values() if n > 1),
            "unanswered": max(0, load.get("sent", 0) - len(per_chat)),
        },
        figures=figures(samples, warmup_s=args.warmup * 60),
    )
    return result


def figures(samples: list[dict[str, Any]], *, warmup_s: float) -> dict[str, dict[str, float]]:
    """First steady-state checkpoint after warm-up beside the last one, per measure."""
    checkpoints = [s for s in samples if s["checkpoint"]]
    warm = next((s for s in checkpoints if s["t_s"] >= warmup_s), checkpoints[0])
    end = checkpoints[-1]
    out = {}
    for key in ("rss_kib", "fds", "tasks"):
        out[key] = {
            "warmup_t_s": warm["t_s"],
            "warmup": warm[key],
            "end_t_s": end["t_s"],
            "end": end[key],
            "ratio": round(end[key] / warm[key], 3) if warm[key] else float("nan"),
            "max_after_warmup": max(s[key] for s in samples if s["t_s"] >= warm["t_s"]),
        }
    return out


def summary(result: dict[str, Any]) -> str:
    s, f, r = result["settings"], result["figures"], result["replies"]
    healed = [x.get("healed_s") for x in result["faults"]]
    lines = [
        f"soak with faults: {s['accounts']} accounts, {s['rate']} msg/s, {s['minutes']} min, "
        f"{len(result['faults'])} faults ({', '.join(sorted({x['kind'] for x in result['faults']}))})",
        f"{'':14} {'after warm-up':>14} {'at the end':>12} {'ratio':>7} {'max after warm-up':>18}",
    ]
    for key, name, scale in (("rss_kib", "RSS (MiB)", 1024), ("fds", "open fds", 1), ("tasks", "asyncio tasks", 1)):
        x = f[key]
        lines.append(
            f"{name:14} {x['warmup'] / scale:14.1f} {x['end'] / scale:12.1f} {x['ratio']:7.3f} "
            f"{x['max_after_warmup'] / scale:18.1f}"
        )
    lines += [
        f"warm-up checkpoint at {f['rss_kib']['warmup_t_s']:.0f} s, end at {f['rss_kib']['end_t_s']:.0f} s",
        f"buyer messages delivered {r['buyer_messages_delivered']:,}: answered exactly once {r['answered_once']:,}, "
        f"more than once {r['answered_more_than_once']:,}, unanswered {r['unanswered']:,}",
        "every account connected again after each fault: "
        + (f"yes, within {max(h for h in healed if h is not None):.0f} s" if all(h is not None for h in healed) else
           f"NO ({sum(h is None for h in healed)} faults did not heal before the next)"),
    ]  # fmt: skip
    return "\n".join(lines)


def write_csv(samples: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(samples[0]))
        writer.writeheader()
        writer.writerows(samples)
    return path


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """RSS, fds, tasks and connected sessions over time, faults marked; None when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return None
    samples = result["samples"]
    minutes = [s["t_s"] / 60 for s in samples]
    panels = (
        ("RSS (MiB)", [s["rss_kib"] / 1024 for s in samples]),
        ("open fds", [s["fds"] for s in samples]),
        ("asyncio tasks", [s["tasks"] for s in samples]),
        ("connected", [s["connected"] for s in samples]),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 7), sharex=True)
    for ax, (name, values) in zip(axes, panels, strict=True):
        ax.plot(minutes, values, linewidth=1.0, color="tab:blue")
        ax.set_ylabel(name, fontsize=8)
        ax.set_ylim(bottom=0, top=max(values) * 1.15 or 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        for fault in result["faults"]:
            ax.axvline(fault["t_s"] / 60, color="tab:red", alpha=0.25, linewidth=0.8)
        ax.axvline(result["figures"]["rss_kib"]["warmup_t_s"] / 60, color="black", linestyle="--", linewidth=0.8)
    for fault in result["faults"]:
        axes[0].text(
            fault["t_s"] / 60, 0.02, fault["kind"], rotation=90, fontsize=5, transform=axes[0].get_xaxis_transform()
        )
    s = result["settings"]
    axes[0].set_title(
        f"soak with faults: {s['accounts']} accounts, {s['rate']} msg/s, a fault every {s['fault_every']} s "
        "(red); dashed = end of warm-up",
        fontsize=9,
    )
    axes[-1].set_xlabel("minutes", fontsize=8)
    fig.tight_layout()
    return save(fig, path, dpi=80)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.soak_faults", description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="buyer messages a second, all accounts together")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--fault-every", type=float, default=60.0, help="seconds between fault injections")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--warmup", type=float, default=2.0, help="minutes before the reference checkpoint")
    p.add_argument("--heartbeat", type=float, default=5.0, help="heartbeat interval (s); the timeout is twice it")
    p.add_argument("--plot", type=Path, default=DOCS_PLOT, help="where the PNG goes")
    p.add_argument("--quick", action="store_true", help="100 accounts, 4 minutes, a fault every 30 s")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.accounts, args.minutes = min(args.accounts, 100), min(args.minutes, 4.0)
        args.fault_every, args.warmup = min(args.fault_every, 30.0), min(args.warmup, 1.0)
        if args.plot == DOCS_PLOT:  # a quick run must not replace the documented plot
            args.plot = RESULTS / "soak_faults_quick.png"
    result = asyncio.run(run(args))
    print(summary(result))
    name = "soak_faults_quick" if args.quick else "soak_faults"
    print(f"wrote {write_json(name, result)}")
    print(f"wrote {write_csv(result['samples'], RESULTS / f'{name}.csv')}")
    if (png := plot(result, args.plot)) is not None:
        print(f"wrote {png}")
    return result


if __name__ == "__main__":
    main()
