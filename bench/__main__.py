"""Run the benchmarks: `python -m bench [name ...] [--quick]` (all of them, or the named ones, in this order).

    codec    push decoding beside the pure-Python msgpack fallback            (bench/codec.py)
    rules    rule matching at 10 / 1,000 / 100,000 rules beside a naive scan  (bench/rules.py)
    session  reply latency, CPU per reply, peak replies/s beside raw websockets (bench/session.py)
    engine   5,000 accounts: start-up, idle RSS and CPU, update-cookie latency (bench/engine.py)
    soak     memory after 10 minutes at 200 msg/s beside the first minute     (bench/soak.py)
    soak_faults  RSS, open fds and tasks over 30 min with a platform fault every minute (bench/soak_faults.py)
    failover workers on PostgreSQL: SIGKILL failover and SIGTERM handover beside the lease TTL, rebalance
             churn beside a fair share, replies exactly once                    (bench/failover.py)
    tls      wss:// beside ws:// on loopback: connect time and CPU, idle RSS and CPU per message per connection,
             stdlib asyncio and uvloop                                          (bench/tls.py)

`--quick` shrinks every size so that the whole set runs in a few minutes. Each bench prints its figures beside
their references and writes `bench/results/<name>.json`. Figures, never a pass/fail.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from . import codec, engine, failover, rules, session, soak, soak_faults, tls
from .harness import environment, write_result


def run_rules(quick: bool) -> dict[str, Any]:
    """bench/rules.py's table, plus the issue's figure: time per message at 100,000 rules over 10 rules."""
    rules.main()
    rng = random.Random(20240605)
    per_msg: dict[int, float] = {}
    for size in (10, 100_000 if not quick else 20_000):
        made = rules.make_rules(size, rng)
        index = rules.RuleIndex.build(made)
        per_msg[size] = rules.per_message(index.match, rules.make_messages(made, rng))
    small, big = sorted(per_msg)
    factor = per_msg[big] / per_msg[small]
    print(f"index time per message at {big:,} rules / at {small} rules = {factor:.2f}x (target <= 2x: "
          f"{'met' if factor <= 2 else 'MISSED'})")  # fmt: skip
    result = {"environment": environment(), "per_message_s": per_msg, "ratio_big_over_small": factor}
    print(f"wrote {write_result('rules', result)}")
    return result


BENCHES: dict[str, Callable[[bool], Any]] = {
    "codec": lambda quick: codec.main(["--rounds", "3", "--pushes", "500"] if quick else []),
    "rules": run_rules,
    "session": lambda quick: session.main(["--quick"] if quick else []),
    "engine": lambda quick: engine.main(["--quick"] if quick else []),
    "soak": lambda quick: soak.main(["--quick"] if quick else []),
    "soak_faults": lambda quick: soak_faults.main(["--quick"] if quick else []),
    "failover": lambda quick: failover.main(["--quick"] if quick else []),
    "tls": lambda quick: tls.main(["--quick"] if quick else []),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", choices=[*BENCHES, []], metavar="name", help=", ".join(BENCHES))
    p.add_argument("--quick", action="store_true", help="small sizes: the whole set in a few minutes")
    args = p.parse_args(argv)
    for name in args.names or list(BENCHES):
        print(f"\n=== {name} {'(quick) ' if args.quick else ''}===", flush=True)
        started = time.perf_counter()
        BENCHES[name](args.quick)
        print(f"--- {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
