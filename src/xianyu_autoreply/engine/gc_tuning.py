"""Keep the cyclic garbage collector's full passes off the reply path of a large engine.

With thousands of accounts the process holds ~400,000 long-lived objects (sessions, connections, rules,
settings). Every full (generation 2) collection walks all of them: ~0.3 s with 1,000 accounts, during which the
event loop answers nothing (the reply latency p99 of `bench.session` was one such pause, docs/performance.md).
`freeze_long_lived()` after start-up moves what exists then into the permanent generation, so later full passes
walk only what was allocated since. Frozen objects are still freed by reference counting when they die; only a
cycle among them that becomes garbage later is never collected, which start-up state does not form in bulk.
"""

from __future__ import annotations

import gc


def freeze_long_lived() -> int:
    """Collect what is garbage now, then freeze every survivor; returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
