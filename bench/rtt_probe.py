"""A raw `websockets` client in its own process doing paced `/!` round trips: the RTT reference under load.

    python -m bench.rtt_probe --ws-url WS --mtop-url URL --passport-url URL --cookie COOKIE --seconds S

Prints `ready` once registered, then, after `--seconds` of round trips (one every `--interval` ms), one JSON line
with the samples in milliseconds. Its own process, so neither the engine's event loop nor the bench's delays it:
what it measures is the simulator and the machine under the load the run generates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from types import SimpleNamespace
from typing import Any, get_args

from xianyu_autoreply import runtime
from xianyu_autoreply.platform.mtop_client import MtopClient


async def probe(args: argparse.Namespace) -> list[float]:
    from .session import BareClient  # the same client the bench's reference uses

    mtop = MtopClient(mtop_url=args.mtop_url, passport_url=args.passport_url)
    try:
        sim: Any = SimpleNamespace(ws_url=args.ws_url)
        client = await BareClient.connect(sim, mtop, {"unb": args.unb, "cookie": args.cookie})
    finally:
        await mtop.aclose()
    await client.round_trips(50)  # warm-up
    print("ready", flush=True)
    samples: list[float] = []
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        samples += await client.round_trips(1)
        await asyncio.sleep(args.interval / 1000)
    await client.ws.close()
    return samples


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.rtt_probe", description=__doc__.splitlines()[0])
    for name in ("--ws-url", "--mtop-url", "--passport-url", "--cookie", "--unb"):
        p.add_argument(name, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--interval", type=float, default=5.0, help="milliseconds between round trips")
    p.add_argument("--loop", choices=get_args(runtime.EventLoopChoice), default="asyncio", help="the bench's loop")
    args = p.parse_args(argv)
    samples = runtime.run(probe(args), loop=args.loop)
    sys.stdout.write(json.dumps({"samples_ms": samples}) + "\n")


if __name__ == "__main__":
    main()
