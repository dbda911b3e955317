"""Fuzz campaign on everything the platform can send us: frame parsing, push decoding, message content.

    python -m bench.fuzz [--minutes 10] [--target frame|payload|content|all] [--seed 1]

Coverage-guided with atheris (`pip install atheris`), seeded with the codec bench's corpus of real-shaped
pushes. The promise under test (PROTOCOL.md, issue 9): hostile input only ever raises our `ProtocolError`
family, within bounded time and memory. Anything else is a finding: atheris stops, prints the input and writes
it as `crash-*` in the working directory. The summary prints executions, executions per second, the slowest
input beside the median input time (a ratio: a superlinear path shows up as a large one) and the peak RSS.
The suite runs a short hypothesis version of the same promise (tests/unit/protocol/test_protocol_properties.py);
this campaign is the long one and belongs here, not in CI.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

try:
    import atheris
except ImportError:  # pragma: no cover - the campaign needs it, the suite does not
    atheris = None

# Only our own code is instrumented: coverage of the stdlib would cost far more than it guides.
with atheris.instrument_imports(include=["xianyu_autoreply"]) if atheris else contextlib.nullcontext():
    from xianyu_autoreply.protocol import (
        FrameKind,
        ProtocolError,
        decode_content,
        decode_payload,
        decode_push,
        parse_frame,
    )

    from .codec import SELLER, Corpus


def frame_target(data: bytes) -> None:
    """A whole server frame: classify it, and decode every item when it is a push."""
    try:
        inbound = parse_frame(data)
    except ProtocolError:
        return
    if inbound.kind is FrameKind.PUSH:
        decode_push(inbound.frame, own_id=SELLER)


def payload_target(data: bytes) -> None:
    """One `data[]` payload's decoded bytes (msgpack or JSON), mutated below the base64 layer."""
    with contextlib.suppress(ProtocolError):
        decode_payload(base64.b64encode(data).decode("ascii"), own_id=SELLER)


def content_target(data: bytes) -> None:
    """A message's `custom.data` content blob."""
    with contextlib.suppress(ProtocolError):
        decode_content(base64.b64encode(data).decode("ascii"))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame": frame_target,
    "payload": payload_target,
    "content": content_target,
}


class Timed:
    """Wrap the targets: count executions and keep per-input times, so the summary can name the slowest."""

    def __init__(self, targets: list[Callable[[bytes], None]], seconds: float) -> None:
        self.targets = targets
        self.seconds = seconds
        self.runs = 0
        self.times: list[float] = []
        self.slowest: tuple[float, bytes, int] = (0.0, b"", 0)
        self.started = time.perf_counter()

    def __call__(self, data: bytes) -> None:
        target = self.targets[self.runs % len(self.targets)]
        t0 = time.perf_counter()
        target(data)
        spent = time.perf_counter() - t0
        self.runs += 1
        if len(self.times) < 200_000:
            self.times.append(spent)
        if spent > self.slowest[0]:
            self.slowest = (spent, data[:200], len(data))
        if self.runs % 1000 == 0 and time.perf_counter() - self.started >= self.seconds:
            self.finish()

    def finish(self) -> None:
        """libFuzzer leaves with `_exit`, skipping atexit, so the campaign ends (and reports) from here."""
        print(self.summary(), flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "fuzz.json").write_text(json.dumps(self.figures(), indent=2))
        os._exit(0)

    def figures(self) -> dict[str, float | int]:
        median = statistics.median(self.times) if self.times else 0.0
        return {
            "inputs": self.runs,
            "seconds": round(time.perf_counter() - self.started, 1),
            "median_input_us": round(median * 1e6, 2),
            "slowest_input_ms": round(self.slowest[0] * 1e3, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.started
        median = statistics.median(self.times) if self.times else 0.0
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ratio = self.slowest[0] / median if median else 0.0
        return (
            f"\nfuzz: {self.runs:,} inputs in {elapsed:.0f} s ({self.runs / max(elapsed, 1e-9):,.0f}/s), "
            f"only ProtocolError raised\n"
            f"  median input {median * 1e6:.1f} µs, slowest {self.slowest[0] * 1e3:.2f} ms "
            f"({ratio:,.0f}x the median), {self.slowest[2]:,} bytes: {self.slowest[1][:60]!r}\n"
            f"  peak RSS {peak_kib / 1024:.1f} MiB\n"
        )


def write_seeds(folder: Path, target: str, seed: int) -> None:
    corpus = Corpus(random.Random(seed), 300)
    if target in ("frame", "all"):
        for n, text in enumerate(corpus.texts[:200]):
            (folder / f"frame-{n}").write_text(text)
    if target in ("payload", "all"):
        for n, payload in enumerate(corpus.payloads[:200]):
            (folder / f"payload-{n}").write_bytes(base64.b64decode(payload))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if atheris is None:
        sys.exit("bench.fuzz needs atheris: pip install atheris")
    chosen = list(TARGETS.values()) if args.target == "all" else [TARGETS[args.target]]
    timed = Timed(chosen, args.minutes * 60)
    seeds = Path(tempfile.mkdtemp(prefix="xar-fuzz-"))
    write_seeds(seeds, args.target, args.seed)
    print(f"fuzzing {args.target} for {args.minutes:g} min, {len(list(seeds.iterdir()))} seeds", flush=True)
    atheris.Setup(
        [sys.argv[0], str(seeds), f"-seed={args.seed}", "-rss_limit_mb=2048", "-max_len=65536", "-print_final_stats=1"],
        timed,
    )
    atheris.Fuzz()


if __name__ == "__main__":
    main()
