"""Device ids, `mid`s and `uuid`s (PROTOCOL.md §1.3-§1.4)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from xianyu_autoreply.protocol import ids, new_device_id, new_mid, new_uuid, now_ms

UNB = "2200000000001"
HEX = set("0123456789ABCDEF")
MID = re.compile(r"^(0|[1-9]\d{0,2})(\d{13}) 0$")
UUID = re.compile(r"^-(\d{13})1$")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def test_device_id_has_the_uuid_layout_with_the_unb_suffix() -> None:
    did = new_device_id(UNB)
    assert len(did) == 36 + 1 + len(UNB)
    assert did.endswith(f"-{UNB}")
    body = did[:36]
    assert [i for i, ch in enumerate(body) if ch == "-"] == [8, 13, 18, 23]
    assert body[14] == "4"
    assert body[19] in "89AB"
    assert set(body.replace("-", "")) <= HEX


def test_device_ids_are_random_uppercase_hex() -> None:
    ids = {new_device_id(UNB)[:36] for _ in range(500)}
    assert len(ids) == 500
    seen = set("".join(ids).replace("-", ""))
    assert seen == HEX  # every uppercase hex digit is drawn, nothing else
    assert {d[19] for d in ids} == set("89AB")


def test_mid_is_a_prefix_below_1000_then_epoch_ms_then_space_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _wall_ms()
    frozen = time.time_ns()  # one millisecond for all: its 1,000 prefixes are used up, then the next one's
    monkeypatch.setattr(ids.time, "time_ns", lambda: frozen)
    mids = [new_mid() for _ in range(2000)]
    prefixes = []
    for mid in mids:
        found = MID.match(mid)
        assert found, mid
        prefixes.append(int(found.group(1)))
        assert int(found.group(2)) >= before  # never behind the wall clock
    assert min(prefixes) < 100 and max(prefixes) > 900  # the whole 0-999 range is drawn


def test_uuid_is_minus_epoch_ms_then_one() -> None:
    before = _wall_ms()
    uuid = new_uuid()
    found = UUID.match(uuid)
    assert found, uuid
    assert int(found.group(1)) >= before


def test_mid_milliseconds_never_go_back_and_uuid_milliseconds_increase() -> None:
    mids = [new_mid() for _ in range(50)]
    mid_stamps = [int(MID.match(m).group(2)) for m in mids]  # type: ignore[union-attr]
    assert mid_stamps == sorted(mid_stamps) and len(set(mids)) == len(mids)
    stamps = [int(UUID.match(new_uuid()).group(1)) for _ in range(50)]  # type: ignore[union-attr]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_now_ms_is_the_wall_clock() -> None:
    assert abs(now_ms() - _wall_ms()) < 1000


# Run in a child process: making 100,000s of ids pushes the per-process id clock minutes ahead of the wall clock
# (see the last assertion), and that must not leak into other tests of this session.
_BURST = r"""
import json, threading, time
from xianyu_autoreply.protocol import new_mid, new_uuid
N = 100_000
mids = [new_mid() for _ in range(N)]
uuids = [new_uuid() for _ in range(N)]
threads, per = 8, N // 8
barrier = threading.Barrier(threads)
t_mids, t_uuids = [], []
def work():
    barrier.wait()
    m = [new_mid() for _ in range(per)]
    u = [new_uuid() for _ in range(per)]
    t_mids.extend(m); t_uuids.extend(u)
ts = [threading.Thread(target=work) for _ in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
last = max(int(u[1:-1]) for u in t_uuids)
print(json.dumps({
    "mids": len(mids), "unique_mids": len(set(mids)), "uuids": len(uuids), "unique_uuids": len(set(uuids)),
    "thread_mids": len(t_mids), "unique_thread_mids": len(set(t_mids) | set(mids)) - len(set(mids)),
    "thread_uuids": len(t_uuids), "unique_thread_uuids": len(set(t_uuids) | set(uuids)) - len(set(uuids)),
    "ahead_ms": last - time.time_ns() // 1_000_000, "issued": 4 * N,
}))
"""


def test_100000_mids_and_uuids_are_unique_in_a_tight_loop_and_across_threads() -> None:
    done = subprocess.run([sys.executable, "-c", _BURST], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    assert result["unique_mids"] == result["mids"] == 100_000
    assert result["unique_uuids"] == result["uuids"] == 100_000
    assert result["unique_thread_mids"] == result["thread_mids"] == 100_000
    assert result["unique_thread_uuids"] == result["thread_uuids"] == 100_000
    # Uniqueness is bought by running the id clock ahead: at most one millisecond per id issued.
    assert result["ahead_ms"] <= result["issued"]
