"""The simulator's public names are a contract: renaming one is a deliberate act."""

from __future__ import annotations

import xianyu_autoreply.simulator as simulator
from xianyu_autoreply.simulator.site import dedupe_head


def test_public_names_are_pinned() -> None:
    assert sorted(simulator.__all__) == [
        "FaultKind",
        "MessageSpec",
        "Simulator",
        "UnknownSeller",
        "WorldError",
        "run_simulator",
    ]


def test_fault_kinds_are_the_documented_ten() -> None:
    assert {k.value for k in simulator.FaultKind} == {
        "drop",
        "close",
        "silence",
        "expire_token",
        "reject_reg",
        "refuse",
        "risk_control",
        "session_expired",
        "slow",
        "garbage",
    }


def test_dedupe_head_keeps_the_first_of_each_singleton_header_and_every_other_line() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nhost: b\r\nConnection: Upgrade\r\nCookie: x=1"
    expected = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nConnection: Upgrade\r\nCookie: x=1"
    assert dedupe_head(head) == expected
