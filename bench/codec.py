"""Push codec: decoding throughput of `decode_push` beside the same pushes through the pure-Python msgpack fallback.

    python bench/codec.py [--out bench/results/codec.json] [--rounds 7] [--pushes 2000]
    python -m bench.codec

The corpus is what a busy seller's connection receives: buyer text messages of varied lengths (mostly Chinese,
some emoji), the echo of the seller's own replies, order cards of every status, typing notices, plain-JSON
assistant notices and a share of multi-item pushes. Each figure is the best of several rounds (`perf_counter`).

The reference is our own decoder with its MessagePack unpacker swapped for `msgpack.fallback.unpackb` (same
options, same extraction code), so the ratio isolates what the C unpacker buys; the raw `msgpack.unpackb` C vs
fallback ratio on the same payloads is printed for context, with encode throughput. Figures, not a pass/fail.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import json
import platform
import random
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import msgpack.fallback
import orjson

import xianyu_autoreply.protocol.push as push_module
from xianyu_autoreply.protocol import (
    BuyerMessage,
    OrderStatus,
    SellerMessage,
    TextContent,
    decode_push,
    encode_chat_message,
    encode_frame,
    encode_order_card,
    encode_system_notice,
    encode_typing,
    parse_frame,
    push_frame,
    send_frame,
)

SELLER = "2200000000001"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "codec.json"

_PHRASES = (
    "你好", "在吗", "这个还在吗", "多少钱", "能便宜点吗", "包邮吗", "什么时候发货", "几成新", "有没有划痕",
    "电池健康多少", "可以小刀吗", "诚心要", "能不能面交", "发顺丰吗", "有发票吗", "保修还有多久", "配件齐全吗",
    "我想要这个", "已拍下", "麻烦尽快发货", "收到了谢谢", "质量怎么样", "是正品吗", "尺码偏大吗", "颜色有色差吗",
)  # fmt: skip
_EMOJI = ("😀", "🙏", "👍", "[微笑]", "[呲牙]", "～", "？", "！")
_NICKS = ("小王同学", "tb_83921", "爱吃鱼的猫", "闲鱼用户_7721", "Lily", "阿强", "北京小李", "一只熊")
_ORDER_STATUSES = (
    OrderStatus.CREATED,
    OrderStatus.PAID,
    OrderStatus.SHIPPED,
    OrderStatus.COMPLETED,
    OrderStatus.CLOSED,
    OrderStatus.REFUNDED,
)


class Corpus:
    """Push frames as the platform sends them, plus counts of what they hold."""

    def __init__(self, rng: random.Random, pushes: int) -> None:
        self.rng = rng
        self.kinds: Counter[str] = Counter()
        self.multi_item_pushes = 0
        self._n = 0
        self.frames = [self._push() for _ in range(pushes)]
        self.texts = [encode_frame(f) for f in self.frames]
        self.items = sum(len(f["body"]["syncPushPackage"]["data"]) for f in self.frames)
        self.payloads = [i["data"] for f in self.frames for i in f["body"]["syncPushPackage"]["data"]]
        raw = [base64.b64decode(p) for p in self.payloads]
        self.msgpack_raw = [r for r in raw if r[:1] not in (b"{", b"[")]
        self.payload_bytes = sum(len(r) for r in raw)

    def text(self) -> str:
        roll = self.rng.random()
        count = 1 if roll < 0.45 else self.rng.randint(2, 5) if roll < 0.9 else self.rng.randint(15, 60)
        parts = [self.rng.choice(_PHRASES) for _ in range(count)]
        if self.rng.random() < 0.3:
            parts.append(self.rng.choice(_EMOJI))
        return "，".join(parts)

    def _ids(self) -> tuple[str, str, str, str]:
        self._n += 1
        buyer = str(2_200_000_100_000 + self.rng.randrange(5000))
        chat = str(48_000_000_000 + self.rng.randrange(50_000))
        item = str(890_000_000_000 + self.rng.randrange(300))
        return buyer, chat, item, f"{self._n:08d}{self.rng.getrandbits(96):024x}"

    def _payload(self) -> str:
        buyer, chat, item, message_id = self._ids()
        created = 1_742_458_817_389 + self._n * 731
        roll = self.rng.random()
        if roll < 0.70:
            self.kinds["buyer_text"] += 1
            m = BuyerMessage(message_id, chat, buyer, self.rng.choice(_NICKS), item, self.text(), 1, created)
            return encode_chat_message(m, receiver_id=SELLER)
        if roll < 0.82:
            self.kinds["seller_echo"] += 1
            m = SellerMessage(message_id, chat, SELLER, "我的小店", item, self.text(), 1, created)
            return encode_chat_message(m, receiver_id=buyer)
        if roll < 0.92:
            self.kinds["order_card"] += 1
            return encode_order_card(
                order_id=str(3_300_000_000_000_000_000 + self.rng.getrandbits(40)),
                status=self.rng.choice(_ORDER_STATUSES),
                buyer_id=buyer,
                buyer_nick=self.rng.choice(_NICKS),
                seller_id=SELLER,
                chat_id=chat,
                item_id=item,
                message_id=message_id,
                created_ms=created,
            )
        if roll < 0.98:
            self.kinds["typing"] += 1
            return encode_typing(user_id=buyer, chat_id=chat)
        self.kinds["json_notice"] += 1
        return encode_system_notice(self.rng.choice(("宝贝还在吗？", "可以便宜点吗？", "今天能发货吗？")))

    def _push(self) -> dict[str, Any]:
        count = self.rng.randint(2, 8) if self.rng.random() < 0.10 else 1
        self.multi_item_pushes += int(count > 1)
        return push_frame([self._payload() for _ in range(count)], sid="bench-sid")


def best_of(rounds: int, work: Callable[[], object]) -> float:
    """The shortest wall time of `rounds` runs of `work` (after one warm-up run)."""
    work()
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


@contextlib.contextmanager
def fallback_unpacker() -> Iterator[None]:
    """Run `decode_push` with the pure-Python unpacker: the same options and extraction, another `unpackb`."""
    shim = types.ModuleType("msgpack_fallback_shim")
    shim.unpackb = msgpack.fallback.unpackb  # type: ignore[attr-defined]
    shim.packb = lambda obj, **kw: msgpack.fallback.Packer(**kw).pack(obj)  # type: ignore[attr-defined]
    original = push_module.msgpack
    push_module.msgpack = shim  # type: ignore[assignment]
    try:
        yield
    finally:
        push_module.msgpack = original


def decode_all(frames: list[dict[str, Any]]) -> list[Any]:
    return [decode_push(frame, own_id=SELLER) for frame in frames]


def run(rounds: int, pushes: int, seed: int) -> dict[str, Any]:
    corpus = Corpus(random.Random(seed), pushes)
    frames, texts = corpus.frames, corpus.texts

    c_events = decode_all(frames)
    errors = sum(len(d.errors) for d in c_events)
    decode_c = best_of(rounds, lambda: decode_all(frames))
    with fallback_unpacker():
        fb_events = decode_all(frames)
        decode_fb = best_of(rounds, lambda: decode_all(frames))
    agree = fb_events == c_events

    def full_path() -> None:
        for text in texts:
            decode_push(parse_frame(text).frame, own_id=SELLER)

    full_c = best_of(rounds, full_path)

    options = {"raw": False, "strict_map_key": False, "unicode_errors": "strict"}
    raw = corpus.msgpack_raw
    unpack_c = best_of(rounds, lambda: [msgpack.unpackb(r, **options) for r in raw])
    unpack_fb = best_of(rounds, lambda: [msgpack.fallback.unpackb(r, **options) for r in raw])

    messages = [
        BuyerMessage(f"m{i}", "48000000001", "2200000100001", "小王同学", "890000000001", t, 1, 1_742_458_817_389)
        for i, t in enumerate(corpus.text() for _ in range(1000))
    ]
    encode_msgs = best_of(rounds, lambda: [encode_chat_message(m, receiver_id=SELLER) for m in messages])
    replies = [TextContent(m.text) for m in messages]
    encode_sends = best_of(
        rounds,
        lambda: [
            encode_frame(send_frame(chat_id="48000000001", to_user="2200000100001", own_id=SELLER, content=c))
            for c in replies
        ],
    )

    n_items = corpus.items
    return {
        "environment": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "msgpack": ".".join(map(str, msgpack.version)),
            "msgpack_c_extension": msgpack.unpackb is not msgpack.fallback.unpackb,
            "orjson": orjson.__version__,
        },
        "settings": {"rounds": rounds, "pushes": pushes, "seed": seed},
        "corpus": {
            "pushes": len(frames),
            "items": n_items,
            "msgpack_items": len(raw),
            "payload_bytes": corpus.payload_bytes,
            "multi_item_pushes": corpus.multi_item_pushes,
            "kinds": dict(corpus.kinds),
            "decode_errors": errors,
        },
        "decode_push": {
            "c_pushes_per_s": len(frames) / decode_c,
            "c_items_per_s": n_items / decode_c,
            "fallback_pushes_per_s": len(frames) / decode_fb,
            "fallback_items_per_s": n_items / decode_fb,
            "ratio_c_over_fallback": decode_fb / decode_c,
            "same_events": agree,
        },
        "parse_frame_and_decode_push": {
            "c_pushes_per_s": len(frames) / full_c,
            "c_items_per_s": n_items / full_c,
        },
        "raw_unpackb": {
            "c_items_per_s": len(raw) / unpack_c,
            "fallback_items_per_s": len(raw) / unpack_fb,
            "ratio_c_over_fallback": unpack_fb / unpack_c,
        },
        "encode": {
            "chat_payloads_per_s": len(messages) / encode_msgs,
            "send_frames_per_s": len(replies) / encode_sends,
        },
    }


def summary(result: dict[str, Any]) -> str:
    env, corpus = result["environment"], result["corpus"]
    dec, full, raw, enc = (result[k] for k in ("decode_push", "parse_frame_and_decode_push", "raw_unpackb", "encode"))
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(corpus["kinds"].items()))
    lines = [
        f"python {env['python']} ({env['machine']}), msgpack {env['msgpack']} "
        f"(C extension: {'yes' if env['msgpack_c_extension'] else 'NO'}), orjson {env['orjson']}",
        f"corpus: {corpus['pushes']:,} pushes ({corpus['multi_item_pushes']} with 2-8 items), "
        f"{corpus['items']:,} items ({kinds}), "
        f"{corpus['payload_bytes'] / 1024:,.0f} KiB of payload, {corpus['decode_errors']} decode errors; "
        f"best of {result['settings']['rounds']} rounds",
        "",
        f"{'':34} {'pushes/s':>12} {'items/s':>12}",
        f"{'decode_push (msgpack C)':34} {dec['c_pushes_per_s']:>12,.0f} {dec['c_items_per_s']:>12,.0f}",
        f"{'decode_push (msgpack fallback)':34} {dec['fallback_pushes_per_s']:>12,.0f} "
        f"{dec['fallback_items_per_s']:>12,.0f}",
        f"{'  ratio C ÷ fallback':34} {dec['ratio_c_over_fallback']:>11.2f}x"
        f"   (same events: {'yes' if dec['same_events'] else 'NO'})",
        f"{'parse_frame + decode_push (C)':34} {full['c_pushes_per_s']:>12,.0f} {full['c_items_per_s']:>12,.0f}",
        "",
        f"{'raw msgpack.unpackb C':34} {'':>12} {raw['c_items_per_s']:>12,.0f}",
        f"{'raw msgpack.fallback.unpackb':34} {'':>12} {raw['fallback_items_per_s']:>12,.0f}",
        f"{'  ratio C ÷ fallback':34} {raw['ratio_c_over_fallback']:>11.2f}x",
        "",
        f"{'encode_chat_message':34} {enc['chat_payloads_per_s']:>12,.0f} payloads/s",
        f"{'send_frame + encode_frame':34} {enc['send_frames_per_s']:>12,.0f} frames/s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per figure; the best one counts")
    parser.add_argument("--pushes", type=int, default=2000, help="push frames in the corpus")
    parser.add_argument("--seed", type=int, default=20240605)
    args = parser.parse_args(argv)
    result = run(args.rounds, args.pushes, args.seed)
    print(summary(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
