"""LoginThrottle as plain function calls on a fake clock: delays, resets, budgets, forgetting, bounded memory."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from xianyu_autoreply.api.login_throttle import (
    MAX_ENTRIES,
    LoginThrottle,
    Refusal,
    ThrottlePolicy,
    ThrottleScope,
    address_key,
)
from xianyu_autoreply.config import ConfigError, load_settings

from .throttling import FakeClock

A, B = "203.0.113.1", "198.51.100.1"


def throttle(**policy: Any) -> tuple[LoginThrottle, FakeClock]:
    clock = FakeClock()
    return LoginThrottle(ThrottlePolicy(**policy), clock=clock), clock


def fail(t: LoginThrottle, client: str, username: str, times: int = 1) -> None:
    for _ in range(times):
        assert t.admit(client, username) is None


def test_the_delay_doubles_past_the_free_failures_and_stops_at_the_cap() -> None:
    policy = ThrottlePolicy(delay_base=1.5, delay_cap=10.0)
    assert [policy.delay(k, free=3) for k in range(9)] == [0, 0, 0, 1.5, 3, 6, 10, 10, 10]
    assert policy.delay(10**9, free=3) == 10.0  # no overflow however long a guesser keeps at it


def test_a_pair_waits_after_its_free_failures_then_twice_as_long_each_time() -> None:
    t, clock = throttle(free_failures=2, delay_base=1.0, delay_cap=4.0)
    fail(t, A, "admin", 2)
    waits = []
    for _ in range(5):
        refusal = t.admit(A, "admin")
        assert refusal is not None and refusal.scope is ThrottleScope.PAIR
        waits.append(refusal.wait)
        clock.advance(refusal.wait - 0.01)
        assert t.admit(A, "admin") is not None  # not a moment before
        clock.advance(0.01)
        fail(t, A, "admin")
    assert waits == [1, 2, 4, 4, 4]


def test_another_address_is_never_slowed_by_a_pairs_failures() -> None:
    t, _ = throttle(free_failures=5)
    fail(t, A, "admin", 5)
    assert t.check(A, "admin") is not None
    assert t.check(B, "admin") is None
    assert t.check(A, "alice") is None  # the same address for another user: only its own budget counts


def test_a_success_starts_the_pair_over_and_forgives_that_one_attempt_elsewhere() -> None:
    t, clock = throttle(free_failures=2, address_failures=10)
    fail(t, A, "admin", 2)
    clock.advance(1)
    fail(t, A, "admin")  # the right password this time:
    t.succeeded(A, "admin")
    fail(t, A, "admin", 2)
    assert t.check(A, "admin") is not None
    assert t.user_failures("admin") == 4  # the success took back only its own attempt


def test_an_address_sweeping_usernames_waits_after_its_larger_budget() -> None:
    t, clock = throttle(free_failures=5, address_failures=20, delay_base=1.0)
    for i in range(20):
        fail(t, A, f"user{i}")
    refusal = t.admit(A, "someone-else")
    assert refusal == Refusal(1.0, ThrottleScope.ADDRESS)
    clock.advance(1)
    fail(t, A, "user20")
    assert t.admit(A, "user21") == Refusal(2.0, ThrottleScope.ADDRESS)
    assert t.check(B, "user0") is None


def test_a_user_under_distributed_attack_leaves_failing_addresses_one_free_failure() -> None:
    t, _ = throttle(free_failures=5, user_failures=10, delay_base=1.0)
    for i in range(9):
        fail(t, f"192.0.2.{i}", "admin")
    assert not t.under_attack("admin")
    assert t.check("192.0.2.0", "admin") is None  # 1 of 5 free failures used
    fail(t, "192.0.2.9", "admin")
    assert t.under_attack("admin")
    assert t.check("192.0.2.0", "admin") == Refusal(1.0, ThrottleScope.PAIR)
    assert t.check(B, "admin") is None  # an address that has not failed for admin is not slowed
    assert t.check("192.0.2.0", "alice") is None


def test_attempts_count_when_admitted_so_concurrent_guesses_cannot_slip_past() -> None:
    t, _ = throttle(free_failures=3)
    admitted = [t.admit(A, "admin") for _ in range(10)]  # none has finished yet
    assert admitted[:3] == [None] * 3
    assert all(isinstance(refusal, Refusal) for refusal in admitted[3:])


def test_a_refused_attempt_does_not_lengthen_the_wait() -> None:
    t, clock = throttle(free_failures=1, delay_base=8.0)
    fail(t, A, "admin")
    for _ in range(100):
        assert t.admit(A, "admin") is not None
    clock.advance(8)
    assert t.admit(A, "admin") is None


def test_counters_are_forgotten_after_a_quiet_period() -> None:
    t, clock = throttle(free_failures=1, address_failures=1, delay_base=60.0, delay_cap=60.0, forget_after=600.0)
    fail(t, A, "admin")
    clock.advance(599)
    assert t.check(A, "admin") is None  # the wait is over, the count is not
    fail(t, A, "admin")
    refusal = t.check(A, "admin")
    assert refusal is not None and refusal.wait == 60.0
    clock.advance(601)
    assert t.check(A, "admin") is None
    assert t.user_failures("admin") == 0
    fail(t, B, "other")  # writing drops the quiet counters in passing
    assert t.tracked() == {"pairs": 1, "addresses": 1, "users": 1}


def test_memory_stays_bounded_under_100000_distinct_addresses() -> None:
    t, _ = throttle()
    held = []
    tracemalloc.start()
    try:
        for i in range(100_000):
            fail(t, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"user{i:06d}")
            if i + 1 in (MAX_ENTRIES, 100_000):
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert t.tracked() == {"pairs": MAX_ENTRIES, "addresses": MAX_ENTRIES, "users": MAX_ENTRIES}
    full, after = held
    # Past the limit it levels off (measured flat from 100,000 to 400,000 addresses); the slack is one step of the
    # dicts' tables, which grow while they hold the slots of evicted entries.
    assert after < full * 1.5
    assert after < 48_000_000  # three full tables: about 40 MB
    assert t.user_failures("user000000") == 0  # the oldest went first
    assert t.user_failures("user099999") == 1


def test_a_refused_counter_is_evicted_last() -> None:
    t, _ = throttle(free_failures=1, delay_base=600.0, delay_cap=600.0)
    t = LoginThrottle(t.policy, clock=t.clock, max_entries=3)
    fail(t, A, "admin")
    fail(t, B, "bob")
    assert t.admit(A, "admin") is not None  # the guesser keeps knocking: its counter stays fresh
    fail(t, "192.0.2.1", "carol")
    fail(t, "192.0.2.2", "dave")
    assert t.check(A, "admin") is not None
    assert t.check(B, "bob") is None


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
        ("x" * 500 + "\0", "x" * 64),
    ],
)
def test_the_address_key_groups_an_ipv6_host_by_its_64(host: str, key: str) -> None:
    assert address_key(host) == key


def test_the_settings_name_the_policy_and_the_old_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = ThrottlePolicy.from_settings(load_settings().api)
    assert policy == ThrottlePolicy()
    monkeypatch.setenv("XAR_API__LOGIN_MAX_FAILURES", "7")
    monkeypatch.setenv("XAR_API__LOCKOUT_SECONDS", "120")
    monkeypatch.setenv("XAR_API__LOGIN_ATTEMPTS_PER_MINUTE", "30")
    old = ThrottlePolicy.from_settings(load_settings().api)
    assert (old.free_failures, old.delay_cap, old.address_failures) == (7, 120.0, 30)
    monkeypatch.setenv("XAR_API__LOGIN_FREE_FAILURES", "3")
    assert load_settings().api.login_free_failures == 3  # the new name wins


def test_forgetting_sooner_than_the_longest_wait_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_API__LOGIN_DELAY_CAP", "7200")
    with pytest.raises(ConfigError, match="login_forget_after must be at least login_delay_cap"):
        load_settings()
