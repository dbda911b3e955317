"""Keyword rule matching: time per message of `RuleIndex` beside a naive scan of the same rules, in one run.

    python bench/rules.py

For 10, 1,000 and 100,000 rules (mostly `contains`, some `exact` and `regex`, a quarter scoped to an item) it
prints the build time, the time per message of the index and of a naive scan (every rule checked in turn, with
keywords normalised and patterns compiled beforehand, so only the matching itself is compared), and their ratio.
It also checks that both pick the same rule for every message. Figures, not a pass/fail.
"""

from __future__ import annotations

import random
import re
import time
import unicodedata
from collections.abc import Callable, Sequence

from xianyu_autoreply.replies.rules import MatchKind, Rule, RuleIndex

SIZES = (10, 1_000, 100_000)
# What buyers ask about, and the small words around it.
_VOCABULARY = (
    "价格 多少钱 包邮 便宜 发货 什么时候 小刀 成色 几成新 尺码 颜色 质量 正品 保修 发票 自提 快递 顺丰 "
    "还在吗 在吗 能用吗 有划痕 电池 续航 内存 型号 配件 原装 说明书 退换 售后 优惠 最低 诚心要"
)
_FILLER = "你好 请问 这个 那个 还有 一下 呢 吗 啊 的 了 亲 老板 想要 可以 看看"
WORDS = tuple(_VOCABULARY.split())
FILLER = tuple(_FILLER.split())
MIN_SECONDS = 0.3


def make_rules(count: int, rng: random.Random) -> list[Rule]:
    rules = []
    for n in range(count):
        roll = rng.random()
        item_id = str(rng.randrange(1, 200)) if rng.random() < 0.25 else None
        priority = rng.choice((0, 0, 0, 1, 2))
        if roll < 0.02:
            keyword = rf"{rng.choice(WORDS)}\d{{2,}}"
            match = MatchKind.REGEX
        else:
            # Mostly unique keywords, as with hundreds of sellers' own phrases; a few are plain common words.
            keyword = rng.choice(WORDS) + (str(n) if rng.random() < 0.9 else "")
            match = MatchKind.EXACT if roll < 0.10 else MatchKind.CONTAINS
        rules.append(Rule(keyword, f"回复{n}", match=match, item_id=item_id, priority=priority, id=f"r{n}"))
    return rules


def make_messages(rules: Sequence[Rule], rng: random.Random, count: int = 500) -> list[tuple[str, str | None]]:
    messages = []
    for _ in range(count):
        parts = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(WORDS) + str(rng.randrange(0, 100)))
        if rng.random() < 0.3:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(rules).keyword)
        text = "".join(parts)
        if rng.random() < 0.05:
            text = rng.choice(rules).keyword
        messages.append((text, str(rng.randrange(1, 200)) if rng.random() < 0.5 else None))
    return messages


_RANK = {MatchKind.EXACT: 0, MatchKind.CONTAINS: 1, MatchKind.REGEX: 2}


class NaiveScan:
    """Every rule checked in turn, best by the documented order: what the index must beat."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.prepared = []
        for position, rule in enumerate(rules):
            keyword = rule.keyword.strip()
            probe: object = re.compile(keyword) if rule.match is MatchKind.REGEX else _fold(keyword).strip()
            key = (0 if rule.item_id else 1, -rule.priority, _RANK[rule.match], -len(keyword), position)
            self.prepared.append((rule, probe, key))

    def match(self, text: str, *, item_id: str | None = None) -> Rule | None:
        folded = _fold(text)
        whole = folded.strip()
        nfkc = unicodedata.normalize("NFKC", text)
        best = None
        for rule, probe, key in self.prepared:
            if rule.item_id is not None and rule.item_id != item_id:
                continue
            if rule.match is MatchKind.CONTAINS:
                hit = probe in folded  # type: ignore[operator]
            elif rule.match is MatchKind.EXACT:
                hit = probe == whole
            else:
                hit = probe.search(nfkc) is not None  # type: ignore[attr-defined]
            if hit and (best is None or key < best[0]):
                best = (key, rule)
        return best[1] if best else None


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def per_message(match: Callable[..., Rule | None], messages: Sequence[tuple[str, str | None]]) -> float:
    """Seconds per call, over as many passes of the messages as fit in MIN_SECONDS (at least one message)."""
    calls = 0
    started = time.perf_counter()
    while True:
        for text, item_id in messages:
            match(text, item_id=item_id)
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= MIN_SECONDS:
                return elapsed / calls


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def main() -> None:
    rng = random.Random(20240605)
    print(f"{'rules':>8} {'build':>10} {'index/msg':>11} {'naive/msg':>11} {'naive÷index':>12} {'agree':>9}")
    for size in SIZES:
        rules = make_rules(size, rng)
        messages = make_messages(rules, rng)
        started = time.perf_counter()
        index = RuleIndex.build(rules)
        build = time.perf_counter() - started
        naive = NaiveScan(rules)
        sample = messages[:100]
        agree = sum(index.match(t, item_id=i) == naive.match(t, item_id=i) for t, i in sample)
        index_time = per_message(index.match, messages)
        naive_time = per_message(naive.match, messages)
        print(
            f"{size:>8,} {_fmt(build):>10} {_fmt(index_time):>11} {_fmt(naive_time):>11} "
            f"{naive_time / index_time:>11.1f}x {agree:>5}/{len(sample)}"
        )


if __name__ == "__main__":
    main()
