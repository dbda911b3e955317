"""Replies on the wire: reply latency, CPU per reply and peak replies/s of the engine, beside raw `websockets`.

    python -m bench session [--quick]
    python -m bench.session [--accounts 1000] [--rate 500] [--seconds 20] [--quick]

The simulator runs in its own process (`python -m xianyu_autoreply simulator`) and generates the buyer load
itself (`POST /_sim/load`); reply latency is measured at the simulator (push -> first send into that chat,
`GET /_sim/latency`). Everything else runs in this process, one phase after another:

1. reference RTT: a raw `websockets` client, registered like a seller, does `/!` heartbeat round trips on an idle
   system (idle RTT); during every measured load below, a second raw client in its own process
   (`bench/rtt_probe.py`, a seller that receives no load) does paced `/!` round trips (loaded RTT);
2. reference CPU per reply: one bare `websockets` client per seller doing the same frame exchange as a reply
   (receive the push, ACK it, decode it, send the answer, read the send's response and the echo), same load;
3. the session layer alone: one `AccountSession` per seller, `decide` answering a fixed text, no database;
4. the engine: `AccountScheduler` on a temp SQLite with one account per seller (default reply set), same load;
5. peak: the engine under rising load; replies/s achieved with engine and simulator CPU, naming what saturates.

Figures beside their references as ratios; never a pass/fail. Every measured load also keeps its reply latency
per 1 s window (`latency_windows`); the engine's steady load is drawn in `bench/results/session.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from xianyu_autoreply.engine.gc_tuning import freeze_long_lived
from xianyu_autoreply.engine.pipeline import AccountPipeline, Steps
from xianyu_autoreply.engine.scheduler import AccountScheduler
from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import AccountSession, Reply
from xianyu_autoreply.protocol import (
    BuyerMessage,
    FrameKind,
    TextContent,
    ack_diff_frame,
    ack_frame,
    decode_push,
    encode_frame,
    heartbeat_frame,
    new_device_id,
    parse_frame,
    reg_frame,
    send_frame,
)
from xianyu_autoreply.replies.admission import Incoming

from .harness import (
    Bed,
    Meter,
    SimulatorProcess,
    add_loop_option,
    connected_count,
    engine_on,
    environment,
    loop_in_use,
    percentile,
    quiet_logs,
    ratio,
    report,
    run_on,
    summary_ms,
    test_bed,
    verdict,
    wait_connected,
)
from .plots import latency_over_time

REPLY_TEXT = "在的，亲，直接拍就行"


class _Jar:
    """The smallest cookie jar `MtopClient` accepts."""

    def __init__(self, cookie: str) -> None:
        self.cookies: dict[str, str] = dict(p.strip().split("=", 1) for p in cookie.split(";") if "=" in p)

    async def replace(self, cookies: Mapping[str, str]) -> None:
        self.cookies = dict(cookies)


class BareClient:
    """A seller on a plain `websockets` connection: registers, then answers every buyer push, nothing more."""

    def __init__(self, seller: Mapping[str, str], token: str, ws: ClientConnection) -> None:
        self.unb = seller["unb"]
        self.token = token
        self.ws = ws
        self.replies = 0
        self.pending: dict[str, asyncio.Future[Any]] = {}

    @classmethod
    async def connect(cls, sim: SimulatorProcess, mtop: MtopClient, seller: Mapping[str, str]) -> BareClient:
        device_id = new_device_id(seller["unb"])
        token = await mtop.fetch_token(_Jar(seller["cookie"]), device_id=device_id)
        ws = await websockets.connect(
            sim.ws_url, additional_headers={"Cookie": seller["cookie"]}, compression=None, ping_interval=None
        )
        client = cls(seller, token, ws)
        for frame in (reg_frame(token=token, device_id=device_id), ack_diff_frame()):
            await ws.send(encode_frame(frame))
            while parse_frame(await ws.recv()).kind is not FrameKind.RESPONSE:
                pass
        return client

    async def round_trips(self, count: int) -> list[float]:
        """`count` sequential `/!` round trips, each in milliseconds."""
        samples = []
        for _ in range(count):
            frame = encode_frame(heartbeat_frame())
            started = time.perf_counter()
            await self.ws.send(frame)
            while parse_frame(await self.ws.recv()).kind is not FrameKind.RESPONSE:
                pass
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    async def serve(self) -> None:
        """Answer pushes until the connection closes: ACK, decode, send the reply (responses are just read)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                inbound = parse_frame(raw)
                if inbound.kind is not FrameKind.PUSH:
                    continue
                ack = ack_frame(inbound.frame)
                if ack is not None:
                    await self.ws.send(encode_frame(ack))
                for event in decode_push(inbound.frame, own_id=self.unb).events:
                    if isinstance(event, BuyerMessage):
                        frame = send_frame(
                            chat_id=event.chat_id,
                            to_user=event.sender_id,
                            own_id=self.unb,
                            content=TextContent(REPLY_TEXT),
                        )
                        await self.ws.send(encode_frame(frame))
                        self.replies += 1


async def bare_clients(sim: SimulatorProcess, sellers: Sequence[Mapping[str, str]]) -> list[BareClient]:
    mtop = MtopClient(mtop_url=sim.mtop_url, passport_url=sim.passport_url)
    sem = asyncio.Semaphore(50)

    async def one(seller: Mapping[str, str]) -> BareClient:
        async with sem:
            return await BareClient.connect(sim, mtop, seller)

    try:
        return list(await asyncio.gather(*(one(s) for s in sellers)))
    finally:
        await mtop.aclose()


class LoadedRtt:
    """The RTT probe process (bench/rtt_probe.py) beside one measured load: raw `/!` round trips under load."""

    def __init__(self, sim: SimulatorProcess, seller: Mapping[str, str]) -> None:
        self.sim = sim
        self.seller = seller
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, seconds: float) -> None:
        """Start the probe and wait until it is registered and warmed up (it then measures for `seconds`)."""
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.rtt_probe", "--ws-url", self.sim.ws_url, "--mtop-url", self.sim.mtop_url),
            *("--passport-url", self.sim.passport_url, "--cookie", self.seller["cookie"], "--unb", self.seller["unb"]),
            *("--seconds", str(seconds), "--loop", loop_in_use()),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the RTT probe did not start: {line!r}")

    async def samples(self) -> list[float]:
        """The probe's round trips in milliseconds (waits for it to finish)."""
        assert self.proc is not None and self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), 120)
        await self.proc.wait()
        return list(json.loads(out)["samples_ms"])


class LatencyWindows:
    """One load's reply latencies as they arrive at the simulator: all of them, and p50/p99 per `window_s` window.

    The simulator's list is read WITHOUT reset and sliced past what was already seen: a reset also forgets the push
    times of messages still in flight, so their replies would drop out of the figures, the slowest first. All the
    samples are kept, so the load's overall percentiles are still over every reply. A window holds the replies
    read during it (`t_s` is its end, seconds from the load start); one landing on a boundary may count in the next.
    """

    def __init__(self, sim: SimulatorProcess, *, window_s: float = 1.0) -> None:
        self.sim = sim
        self.window_s = window_s
        self.started = time.perf_counter()
        self.samples: list[float] = []
        self.windows: list[dict[str, float]] = []
        self._open: list[float] = []
        self._open_end = window_s

    async def read(self) -> int:
        """Take the replies since the last read into the open window, close the windows that ended; the count."""
        new = await self.sim.latencies(since=len(self.samples))
        self.samples += new
        self._open += new
        while time.perf_counter() - self.started >= self._open_end:
            self._close()
        return len(new)

    def _close(self) -> None:
        w = self._open
        self.windows.append(
            {"t_s": round(self._open_end, 3), "count": len(w), "p50_ms": percentile(w, 50), "p99_ms": percentile(w, 99)}
        )
        self._open = []
        self._open_end += self.window_s

    async def every_window(self, stop: asyncio.Event) -> None:
        """Read at each window's end until `stop` is set; returns between reads, so no reply is half-read."""
        while True:
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, self.started + self._open_end - time.perf_counter()))
                return
            except TimeoutError:
                await self.read()

    def finish(self) -> list[dict[str, float]]:
        """Close the last, partial window (if it holds replies) and return them all."""
        if self._open:
            self._close()
        return self.windows


async def measured_load(
    sim: SimulatorProcess,
    rate: float,
    seconds: float,
    sellers: Sequence[str],
    *,
    drain: float = 20.0,
    probe: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Wait for any earlier backlog to be answered, reset the latency window, run the load, wait for its replies.

    `replies_per_s` is replies / (load start -> last reply seen): the rate the engine actually answered at.
    With `probe` (a seller outside `sellers`), a raw client in its own process measures the RTT during the load.
    Latencies are read every second during the load (`latency_windows`), in every measured load alike, so the
    simulator does the same extra work beside the engine as beside the references.
    """
    settled_s = await sim.settle()
    await sim.latencies(reset=True)
    await sim.ack_latencies(reset=True)
    rtt_probe = LoadedRtt(sim, probe) if probe is not None else None
    if rtt_probe is not None:
        await rtt_probe.start(seconds)
    meter = Meter(sim.pid)
    replies = LatencyWindows(sim)
    stop = asyncio.Event()
    reader = asyncio.create_task(replies.every_window(stop))
    try:
        status = await sim.run_load(rate, seconds, sellers)
        cpu = meter.read()
        loaded_rtt = summary_ms(await rtt_probe.samples()) if rtt_probe is not None else None
    finally:
        stop.set()
        await reader
    await replies.read()
    last_reply_s = meter.read()["wall_s"]
    deadline = time.monotonic() + drain
    quiet_since = time.monotonic()
    while len(replies.samples) < status.get("sent", 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if await replies.read():
            quiet_since = time.monotonic()
            last_reply_s = meter.read()["wall_s"]
        elif time.monotonic() - quiet_since > 2.0:
            break
    cpu_total = meter.read()
    samples = replies.samples
    acks = await sim.ack_latencies(reset=True)
    return {
        "rate": rate,
        "seconds": seconds,
        "settled_before_s": settled_s,
        "sent": status.get("sent", 0),
        "skipped": status.get("skipped", 0),
        "replied": len(samples),
        # The last reply came at most its latency after the load ended (polling alone would add up to ~1 s).
        "replies_per_s": len(samples) / max(seconds, min(last_reply_s, seconds + max(samples, default=0) / 1000)),
        "latency_ms": summary_ms(samples),
        "ack_ms": summary_ms(acks),  # push queued at the simulator -> its ACK received, every push of the load
        "cpu_during_load": cpu,
        "cpu_until_drained": cpu_total,
        "engine_cpu_ms_per_reply": 1000 * cpu_total["engine_cpu_s"] / max(1, len(samples)),
        "sim_cpu_ms_per_reply": 1000 * cpu_total["sim_cpu_s"] / max(1, len(samples)),
        "loaded_rtt_ms": loaded_rtt,
        "latency_windows": replies.finish(),
    }


async def reference_phase(
    bed: Bed, *, rtts: int, rate: float, seconds: float, probe: Mapping[str, str]
) -> dict[str, Any]:
    clients = await bare_clients(bed.sim, bed.sellers)
    try:
        idle = clients[0]
        await idle.round_trips(100)  # warm-up
        rtt = summary_ms(await idle.round_trips(rtts))
        serving = [asyncio.create_task(c.serve()) for c in clients]
        await measured_load(bed.sim, rate, min(2.0, seconds), [c.unb for c in clients])  # warm-up
        load = await measured_load(bed.sim, rate, seconds, [c.unb for c in clients], probe=probe)
        for c in clients:
            await c.ws.close()
        await asyncio.gather(*serving, return_exceptions=True)
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.ws.close()
    return {"rtt_ms": rtt, "bare_load": load}


async def session_phase(bed: Bed, *, rate: float, seconds: float, probe: Mapping[str, str]) -> dict[str, Any]:
    """The session layer (platform/) read by a pipeline without a store: fixed reply, ACK before answering."""
    mtop = MtopClient(mtop_url=bed.sim.mtop_url, passport_url=bed.sim.passport_url)

    async def decide(incoming: Incoming) -> Reply | None:
        return Reply(text=REPLY_TEXT, source="bench") if isinstance(incoming.event, BuyerMessage) else None

    sessions = [
        AccountSession(
            account_id=f"s{n}",
            cookie=s["cookie"],
            ws_url=bed.sim.ws_url,
            mtop=mtop,
            settings=bed.settings.session,
        )
        for n, s in enumerate(bed.sellers)
    ]
    pipelines = [AccountPipeline(s, Steps(decide=decide)) for s in sessions]
    runs = []
    try:
        for p in pipelines:
            runs.append(asyncio.create_task(p.run()))
            await asyncio.sleep(0.002)
        deadline = time.monotonic() + 120
        while True:
            if sum(s.connected for s in sessions) == len(sessions) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        sellers = [s.seller_id for s in sessions]
        await measured_load(bed.sim, rate, min(2.0, seconds), sellers)  # warm-up
        return await measured_load(bed.sim, rate, seconds, sellers, probe=probe)
    finally:
        await asyncio.gather(*(p.close() for p in pipelines), return_exceptions=True)
        await asyncio.gather(*runs, return_exceptions=True)
        await mtop.aclose()


async def engine_phase(
    bed: Bed,
    *,
    rate: float,
    seconds: float,
    peak_rates: Sequence[float],
    peak_seconds: float,
    probe: Mapping[str, str],
) -> dict[str, Any]:
    engine: AccountScheduler = engine_on(bed)
    await engine.start()
    try:
        await wait_connected(engine, len(bed.account_ids), timeout=300)
        frozen = freeze_long_lived()  # as `serve` does after start-up: full GC passes skip the start-up state
        sellers = [s["unb"] for s in bed.sellers]
        # Warm-up: every account answers once (item facts cached, first-message paths taken), then drained.
        await measured_load(bed.sim, max(rate, len(sellers) / 2), 2.0, sellers, drain=60)
        load = await measured_load(bed.sim, rate, seconds, sellers, drain=60, probe=probe)
        load["connected_after"] = connected_count(engine)
        load["gc_frozen_objects"] = frozen
        peak = []
        for r in peak_rates:
            step = await measured_load(bed.sim, r, peak_seconds, sellers, drain=30)
            step["achieved_per_s"] = step["replies_per_s"]
            peak.append(step)
            print(
                f"  peak step {r:>6,.0f} msg/s offered: {step['achieved_per_s']:>6,.0f} replies/s, "
                f"engine {step['cpu_during_load']['engine_core_pct']:.0f} % of a core, "
                f"simulator {step['cpu_during_load']['sim_core_pct']:.0f} %"
            )
            if step["achieved_per_s"] < 0.8 * step["sent"] / peak_seconds:
                break  # saturated: more offered load only grows the backlog
        return {"load": load, "peak_steps": peak}
    finally:
        await engine.stop()


def saturation(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    best = max(steps, key=lambda s: s["achieved_per_s"])
    cpu = best["cpu_during_load"]
    engine_pct, sim_pct = cpu["engine_core_pct"], cpu["sim_core_pct"]
    if max(engine_pct, sim_pct) < 85:
        resource = "neither process at a full core (offered load was the limit)"
    else:
        resource = "engine CPU (one core)" if engine_pct >= sim_pct else "simulator CPU (one core)"
    return {"peak_replies_per_s": best["achieved_per_s"], "at_offered": best["rate"], "saturating": resource}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    quiet_logs()
    result: dict[str, Any] = {
        "environment": environment(),
        "settings": {k: v for k, v in vars(args).items() if k != "func"},
    }
    async with test_bed(args.accounts) as bed:
        print(f"session bench: {args.accounts:,} accounts, {args.rate:,.0f} msg/s for {args.seconds:.0f} s")
        # A seller that gets no buyer load: the loaded-RTT probe's identity in every measured load.
        (probe,) = await bed.sim.create_sellers(1, prefix=2_300_000_000_000)
        result["reference"] = await reference_phase(
            bed, rtts=args.rtts, rate=args.rate, seconds=args.seconds, probe=probe
        )
        print("  reference measured")
        result["session_layer"] = await session_phase(bed, rate=args.rate, seconds=args.seconds, probe=probe)
        print("  session layer measured")
        peak_rates = [r for r in (250, 500, 1000, 2000, 4000) if not args.quick or r <= 1000]
        result["engine"] = await engine_phase(
            bed,
            rate=args.rate,
            seconds=args.seconds,
            peak_rates=peak_rates,
            peak_seconds=args.peak_seconds,
            probe=probe,
        )
    result["peak"] = saturation(result["engine"]["peak_steps"])
    rtt = result["reference"]["rtt_ms"]
    bare = result["reference"]["bare_load"]
    layer = result["session_layer"]
    engine = result["engine"]["load"]
    loaded = engine["loaded_rtt_ms"]  # the RTT under the engine's own measured load
    result["figures"] = {
        "latency_p50_over_loaded_rtt_p50": ratio(engine["latency_ms"]["p50"], loaded["p50"]),
        "latency_p99_over_loaded_rtt_p50": ratio(engine["latency_ms"]["p99"], loaded["p50"]),
        "latency_p99_over_loaded_rtt_p99": ratio(engine["latency_ms"]["p99"], loaded["p99"]),
        "loaded_rtt_p50_over_idle_rtt_p50": ratio(loaded["p50"], rtt["p50"]),
        "bare_latency_p50_over_loaded_rtt_p50": ratio(bare["latency_ms"]["p50"], bare["loaded_rtt_ms"]["p50"]),
        "latency_p50_over_rtt_p50": ratio(engine["latency_ms"]["p50"], rtt["p50"]),
        "latency_p99_over_rtt_p50": ratio(engine["latency_ms"]["p99"], rtt["p50"]),
        "latency_p99_over_rtt_p99": ratio(engine["latency_ms"]["p99"], rtt["p99"]),
        "bare_latency_p50_over_rtt_p50": ratio(bare["latency_ms"]["p50"], rtt["p50"]),
        "latency_p50_over_bare_p50": ratio(engine["latency_ms"]["p50"], bare["latency_ms"]["p50"]),
        "latency_p99_over_bare_p99": ratio(engine["latency_ms"]["p99"], bare["latency_ms"]["p99"]),
        "cpu_per_reply_over_bare": ratio(engine["engine_cpu_ms_per_reply"], bare["engine_cpu_ms_per_reply"]),
        "ack_p50_over_bare_ack_p50": ratio(engine["ack_ms"]["p50"], bare["ack_ms"]["p50"]),
        "ack_p99_over_bare_ack_p99": ratio(engine["ack_ms"]["p99"], bare["ack_ms"]["p99"]),
        "ack_p50_over_session_layer_ack_p50": ratio(engine["ack_ms"]["p50"], layer["ack_ms"]["p50"]),
        "session_layer_latency_p50_over_rtt_p50": ratio(layer["latency_ms"]["p50"], rtt["p50"]),
        "session_layer_latency_p99_over_rtt_p50": ratio(layer["latency_ms"]["p99"], rtt["p50"]),
        "session_layer_cpu_per_reply_over_bare": ratio(
            layer["engine_cpu_ms_per_reply"], bare["engine_cpu_ms_per_reply"]
        ),
    }
    return result


def summary(result: dict[str, Any]) -> str:
    ref, fig = result["reference"], result["figures"]
    rtt, bare = ref["rtt_ms"], ref["bare_load"]
    layer, engine, peak = result["session_layer"], result["engine"]["load"], result["peak"]
    s = result["settings"]

    def lat(x: Mapping[str, Any]) -> str:
        m = x["latency_ms"]
        return f"p50 {m['p50']:8.2f} ms  p99 {m['p99']:8.2f} ms  ({x['replied']:,}/{x['sent']:,} replied)"

    def ack(x: Mapping[str, Any]) -> str:
        m = x["ack_ms"]
        return f"p50 {m['p50']:8.2f} ms  p99 {m['p99']:8.2f} ms  ({m['count']:,} pushes)"

    def rtt_line(label: str, m: Mapping[str, float]) -> str:
        return f"{label:38} p50 {m['p50']:8.3f} ms  p99 {m['p99']:8.3f} ms  ({m['count']:,} round trips)"

    loaded = engine["loaded_rtt_ms"]
    lines = [
        f"{s['accounts']:,} accounts, {s['rate']:,.0f} buyer msg/s for {s['seconds']:.0f} s, simulator in its own "
        f"process; bench process (engine and reference clients) on {result['environment']['event_loop']}",
        rtt_line("raw websockets /! RTT, idle", rtt),
        rtt_line("raw /! RTT, bare clients' load", bare["loaded_rtt_ms"]),
        rtt_line("raw /! RTT, session layer's load", layer["loaded_rtt_ms"]),
        rtt_line("raw /! RTT, engine's load", loaded),
        f"{'bare websockets clients, reply':38} {lat(bare)}",
        f"{'AccountSession only (no store)':38} {lat(layer)}",
        f"{'engine (AccountScheduler + SQLite)':38} {lat(engine)}",
        f"  vs the IDLE RTT:   p50 / RTT p50 = {fig['latency_p50_over_rtt_p50']:.1f}x (target <= 3x: "
        f"{verdict(fig['latency_p50_over_rtt_p50'] <= 3)}); p99 / RTT p50 = {fig['latency_p99_over_rtt_p50']:.1f}x "
        f"(target <= 10x: {verdict(fig['latency_p99_over_rtt_p50'] <= 10)}); p99 / RTT p99 = "
        f"{fig['latency_p99_over_rtt_p99']:.1f}x",
        f"  vs the LOADED RTT: p50 / RTT p50 = {fig['latency_p50_over_loaded_rtt_p50']:.1f}x (target <= 3x: "
        f"{verdict(fig['latency_p50_over_loaded_rtt_p50'] <= 3)}); p99 / RTT p50 = "
        f"{fig['latency_p99_over_loaded_rtt_p50']:.1f}x (target <= 10x: "
        f"{verdict(fig['latency_p99_over_loaded_rtt_p50'] <= 10)}); p99 / RTT p99 = "
        f"{fig['latency_p99_over_loaded_rtt_p99']:.1f}x (loaded RTT p50 = "
        f"{fig['loaded_rtt_p50_over_idle_rtt_p50']:.1f}x the idle one)",
        f"  beside the bare clients' reply latency: p50 {fig['latency_p50_over_bare_p50']:.1f}x, p99 "
        f"{fig['latency_p99_over_bare_p99']:.1f}x (the bare clients themselves: p50 "
        f"{fig['bare_latency_p50_over_rtt_p50']:.1f}x the idle RTT p50, "
        f"{fig['bare_latency_p50_over_loaded_rtt_p50']:.1f}x their loaded RTT p50)",
        f"  session layer alone: p50 {fig['session_layer_latency_p50_over_rtt_p50']:.1f}x, "
        f"p99 {fig['session_layer_latency_p99_over_rtt_p50']:.1f}x the RTT p50",
        f"{'push -> ACK, bare clients (at once)':38} {ack(bare)}",
        f"{'push -> ACK, AccountSession (no store)':38} {ack(layer)}",
        f"{'push -> ACK, engine (after the record)':38} {ack(engine)}",
        f"  engine ACK p50 = {fig['ack_p50_over_bare_ack_p50']:.1f}x the bare clients', p99 = "
        f"{fig['ack_p99_over_bare_ack_p99']:.1f}x; the record's group commit adds "
        f"{engine['ack_ms']['p50'] - layer['ack_ms']['p50']:.2f} ms at p50, "
        f"{engine['ack_ms']['p99'] - layer['ack_ms']['p99']:.2f} ms at p99 to the session layer's ACK",
        f"{'CPU per reply, bare client':38} {bare['engine_cpu_ms_per_reply']:8.3f} ms (reference)",
        f"{'CPU per reply, AccountSession only':38} {layer['engine_cpu_ms_per_reply']:8.3f} ms "
        f"= {fig['session_layer_cpu_per_reply_over_bare']:.2f}x",
        f"{'CPU per reply, engine':38} {engine['engine_cpu_ms_per_reply']:8.3f} ms "
        f"= {fig['cpu_per_reply_over_bare']:.2f}x (target <= 3x: {verdict(fig['cpu_per_reply_over_bare'] <= 3)})",
        f"{'simulator CPU per reply (engine run)':38} {engine['sim_cpu_ms_per_reply']:8.3f} ms",
        f"peak: {peak['peak_replies_per_s']:,.0f} replies/s (offered {peak['at_offered']:,.0f}); "
        f"saturating: {peak['saturating']}",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """The engine's steady load: reply latency p50/p99 per second beside the RTT measured under that same load."""
    s, load = result["settings"], result["engine"]["load"]
    m = load["latency_ms"]
    title = (
        f"engine reply latency per 1 s window: {s['accounts']:,} accounts, {s['rate']:,.0f} buyer msg/s for "
        f"{s['seconds']:g} s\n(overall over all {m['count']:,} replies: p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms)"
    )
    return latency_over_time(
        load["latency_windows"],
        path,
        reference_ms=(load["loaded_rtt_ms"] or {}).get("p50"),
        reference_label="raw /! RTT p50 under the same load:",
        load_end_s=load["seconds"],
        title=title,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.session", description=__doc__.splitlines()[0])
    p.add_argument("--accounts", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500.0, help="buyer messages per second, all accounts together")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each measured load")
    p.add_argument("--peak-seconds", type=float, default=8.0, help="length of each peak step")
    p.add_argument("--rtts", type=int, default=5000, help="reference /! round trips")
    p.add_argument("--quick", action="store_true", help="200 accounts, 5 s loads")
    add_loop_option(p)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.accounts, args.seconds, args.peak_seconds, args.rtts = min(args.accounts, 200), 5.0, 4.0, 1000
    return report("session", run_on(run(args), args.loop), summary, plot)


if __name__ == "__main__":
    main()
