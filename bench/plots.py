"""The benches' PNGs, saved beside their JSON: latency over time, RSS over accounts, RSS and latency over a soak.

matplotlib lives in the `bench` extra (`pip install -e '.[bench]'`) and may be missing: then `pyplot()` prints a
note and every function returns None, so a bench still writes its JSON and prints its summary. Each function takes
the series already in the result JSON, so a plot can be redrawn later from `bench/results/<name>.json` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .harness import startup_rss_fit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def pyplot() -> ModuleType | None:
    """`matplotlib.pyplot` on the file-only Agg backend (no display on a bench box), or None with a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: pip install -e '.[bench]' for matplotlib")
        return None
    return plt


def save(fig: Figure, path: Path, *, dpi: int = 80) -> Path:
    """Write the PNG (creating its folder) and close the figure, so a long bench does not keep figures alive."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _latency_panel(
    ax: Axes,
    t: Sequence[float],
    p50: Sequence[float],
    p99: Sequence[float],
    *,
    reference_ms: float | None,
    reference_label: str,
) -> None:
    """p50 and p99 on a log axis in plain milliseconds; points without samples (NaN) are left out, not zero."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for values, label, color in ((p99, "p99", "tab:red"), (p50, "p50", "tab:blue")):
        points = [(x, y) for x, y in zip(t, values, strict=True) if _finite(y)]
        ax.plot([x for x, _ in points], [y for _, y in points], marker=".", linewidth=1.0, color=color, label=label)
    if reference_ms is not None and _finite(reference_ms):
        ax.axhline(
            reference_ms, color="black", linestyle="--", linewidth=0.9, label=f"{reference_label} {reference_ms:.2f} ms"
        )
    ax.set_yscale("log")
    # 1-2-5 labels in plain ms: a tail within one decade still gets labelled ticks (10^n alone would leave none).
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("reply latency (ms, log scale)")
    ax.grid(alpha=0.3, which="both")
    _legend(ax)


def _legend(ax: Axes) -> None:
    """Beside the axes, never over the data (tight_layout makes room for it)."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def latency_over_time(
    windows: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    reference_ms: float | None = None,
    reference_label: str = "reference RTT p50",
    load_end_s: float | None = None,
    title: str = "",
) -> Path | None:
    """Reply latency p50/p99 per window (`t_s` = window end, `p50_ms`, `p99_ms`), to show it stayed flat.

    One overall p99 hides whether the tail is spread out or one stall; the reference RTT line is the floor
    the wire itself sets under the same load.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    t = [w["t_s"] for w in windows]
    _latency_panel(
        ax,
        t,
        [w["p50_ms"] for w in windows],
        [w["p99_ms"] for w in windows],
        reference_ms=reference_ms,
        reference_label=reference_label,
    )
    if load_end_s is not None:
        ax.axvline(load_end_s, color="grey", linestyle=":", linewidth=0.9)
        ax.text(load_end_s, 0.97, " load ends", fontsize=7, color="grey", va="top", transform=ax.get_xaxis_transform())
    width = t[1] - t[0] if len(t) > 1 else 1.0
    ax.set_xlabel(f"seconds since the load started (each point: the {width:g} s window ending there)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path, dpi=100)


def rss_over_accounts(
    samples: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    settled: Sequence[tuple[str, float, float]] = (),
    title: str = "",
) -> Path | None:
    """RSS (MiB) against connected accounts while the engine starts (`connected`, `rss_kib` per sample).

    The slope is what each further account costs while connecting; `settled` adds labelled points
    (label, accounts, RSS KiB) measured after gc + malloc_trim, the figure the idle target is judged on.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = [s["connected"] for s in samples]
    ys = [s["rss_kib"] / 1024 for s in samples]
    ax.plot(xs, ys, marker=".", linewidth=1.0, color="tab:blue", label="VmRSS while starting (not settled)")
    per_account, intercept = startup_rss_fit(samples)
    if math.isfinite(per_account):
        ends = (min(x for x in xs if x > 0), max(xs))
        fit = [(intercept + per_account * x) / 1024 for x in ends]
        ax.plot(ends, fit, linestyle="--", color="tab:orange", linewidth=0.9, label="least-squares fit")
    for (label, accounts, kib), marker in zip(settled, "sDo^", strict=False):
        ax.plot([accounts], [kib / 1024], marker=marker, linestyle="none", color="black", label=label)
    ax.set_xlabel("connected accounts")
    ax.set_ylabel("RSS (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")  # RSS rises with accounts: the upper left stays empty
    ax.set_title(f"{title}\nslope {per_account:.1f} KiB of RSS per connected account".strip(), fontsize=9)
    fig.tight_layout()
    return save(fig, path, dpi=100)


def rss_and_latency_over_time(
    samples: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    rss_reference_kib: float,
    reference_label: str = "after the first minute",
    tolerance_pct: float = 5.0,
    title: str = "",
) -> Path | None:
    """Two panels over minutes: RSS against its reference (± `tolerance_pct` shaded), latency p50/p99.

    Samples carry `t_s`, `rss_kib`, `latency_p50_ms` and `latency_p99_ms`; the latency panel shows the engine
    kept up, so that a flat RSS is not just a backlog that never got processed.
    """
    plt = pyplot()
    if plt is None:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    minutes = [s["t_s"] / 60 for s in samples]
    ref = rss_reference_kib / 1024
    rss = [s["rss_kib"] / 1024 for s in samples]
    top.plot(minutes, rss, marker=".", linewidth=1.0, color="tab:blue", label="RSS after gc + malloc_trim")
    top.axhline(ref, color="black", linestyle="--", linewidth=0.9, label=f"{reference_label}: {ref:.1f} MiB")
    band = (ref * (1 - tolerance_pct / 100), ref * (1 + tolerance_pct / 100))
    top.axhspan(*band, color="tab:green", alpha=0.12, label=f"within {tolerance_pct:g} % of it")
    top.set_ylabel("RSS (MiB)")
    top.grid(alpha=0.3)
    _legend(top)
    top.set_title(title, fontsize=9)
    _latency_panel(
        bottom,
        minutes,
        [s["latency_p50_ms"] for s in samples],
        [s["latency_p99_ms"] for s in samples],
        reference_ms=None,
        reference_label="",
    )
    width = samples[1]["t_s"] - samples[0]["t_s"] if len(samples) > 1 else samples[0]["t_s"]
    bottom.set_xlabel(f"minutes since the load started (each point: the ~{width:.0f} s window ending there)")
    fig.tight_layout()
    return save(fig, path, dpi=100)
