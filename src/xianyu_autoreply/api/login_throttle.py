"""Login throttling that slows a guesser down and never locks the owner out (docs/security.md, "Login throttling").

Three counters of failed logins, kept in memory by this process, each forgotten after `forget_after` seconds
without a new failure:

- per (client address, username): after `free_failures` failures, each further attempt of that pair waits
  `delay_base * 2**k` seconds (k = failures past the free ones), at most `delay_cap`;
- per client address, whatever the usernames: the same doubling after `address_failures` failures, which slows a
  sweep of many usernames from one address;
- per username, from all addresses: past `user_failures` (a guess spread over many addresses) the user counts as
  under attack, and every pair of that user gets one free failure instead of `free_failures`. An address that
  has not failed for the user is never slowed by this, so the owner's right password still goes through.

A refused attempt is answered before the password is checked, so the wait is real and costs no argon2 round.
An admitted attempt counts as a failure at once (concurrent guesses cannot all slip in before the first one is
counted) and is forgiven when it succeeds: the pair starts over, the address and username counters drop by one.
Nothing here does I/O; the clock is injected, so tests move time instead of sleeping.

Memory is bounded under a distributed sweep: each table holds at most `max_entries` counters and evicts the one
with the oldest activity. IPv6 clients count per /64 network, since one host usually has a whole /64.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

import structlog

from ..config import ApiSettings

__all__ = ["LoginThrottle", "Refusal", "ThrottlePolicy", "ThrottleScope", "address_key"]

MAX_ENTRIES = 50_000  # per table: about 40 MB when all three are full (tests/api/test_login_throttle.py)
_MAX_NAME = 64  # longer usernames cannot exist (store.check_username), so they need not be told apart
_MAX_EXPONENT = 64  # beyond this the delay is the cap anyway; keeps 2**k a small float

K = TypeVar("K", bound=Hashable)

log = structlog.get_logger("xianyu_autoreply.api.login_throttle")


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How many failures are free and how the wait grows after them (seconds)."""

    free_failures: int = 5
    address_failures: int = 50
    user_failures: int = 100
    delay_base: float = 1.0
    delay_cap: float = 900.0
    forget_after: float = 3600.0

    @classmethod
    def from_settings(cls, api: ApiSettings) -> ThrottlePolicy:
        """The policy of `XAR_API__LOGIN_*`."""
        return cls(
            free_failures=api.login_free_failures,
            address_failures=api.login_address_failures,
            user_failures=api.login_user_failures,
            delay_base=api.login_delay_base,
            delay_cap=api.login_delay_cap,
            forget_after=api.login_forget_after,
        )

    def delay(self, failures: int, *, free: int) -> float:
        """The wait after `failures` failures of which `free` cost nothing: 0, then base, 2*base, 4*base... capped."""
        excess = failures - free
        if excess < 0:
            return 0.0
        return min(self.delay_cap, self.delay_base * 2.0 ** min(excess, _MAX_EXPONENT))


class ThrottleScope(StrEnum):
    """Which counter refused an attempt."""

    ADDRESS = "address"  # too many failures from this address, whatever the usernames
    PAIR = "pair"  # too many failures for this username from this address


@dataclass(frozen=True, slots=True)
class Refusal:
    """An attempt that must wait `wait` seconds before it is tried."""

    wait: float
    scope: ThrottleScope


def address_key(host: str) -> str:
    """The counter key of a client address: IPv4 as is (also when IPv4-mapped), IPv6 as its /64 network."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:_MAX_NAME].replace("\0", "")  # not an address (a test client, a unix socket): as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _pair(address: str, name: str) -> str:
    # One string rather than a tuple of two (a third less memory per counter). Unambiguous: an address key never
    # holds a NUL, so the first NUL ends the address.
    return f"{address}\0{name}"


class _Counter:
    __slots__ = ("failures", "last")

    def __init__(self, now: float) -> None:
        self.failures = 0
        self.last = now  # time of the latest failure


class _Table(Generic[K]):
    """Counters by key in order of last activity (oldest first), at most `limit`, forgotten when quiet."""

    def __init__(self, *, limit: int, forget_after: float) -> None:
        self.limit = limit
        self.forget_after = forget_after
        self._counters: OrderedDict[K, _Counter] = OrderedDict()

    def __len__(self) -> int:
        return len(self._counters)

    def get(self, key: K, now: float) -> _Counter | None:
        counter = self._counters.get(key)
        if counter is not None and now - counter.last > self.forget_after:
            del self._counters[key]
            return None
        return counter

    def touch(self, key: K) -> None:
        """Mark as recently active (a refused attempt), so that a flood of other keys evicts it last."""
        if key in self._counters:
            self._counters.move_to_end(key)

    def fail(self, key: K, now: float) -> _Counter:
        counter = self.get(key, now)
        if counter is None:
            counter = self._counters[key] = _Counter(now)
        else:
            self._counters.move_to_end(key)
        counter.failures += 1
        counter.last = now
        self._trim(now)
        return counter

    def forgive(self, key: K) -> None:
        """Take back one counted failure (the attempt succeeded)."""
        counter = self._counters.get(key)
        if counter is not None:
            counter.failures -= 1
            if counter.failures <= 0:
                del self._counters[key]

    def drop(self, key: K) -> None:
        self._counters.pop(key, None)

    def _trim(self, now: float) -> None:
        # Quiet counters at the front go first (each at most once: amortised O(1)), then the oldest over the limit.
        while self._counters:
            key, counter = next(iter(self._counters.items()))
            if now - counter.last <= self.forget_after and len(self._counters) <= self.limit:
                break
            del self._counters[key]


class LoginThrottle:
    """The three failure counters of one process and the decision whether an attempt may be tried now."""

    def __init__(
        self,
        policy: ThrottlePolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.policy = policy or ThrottlePolicy()
        self.clock = clock
        forget = self.policy.forget_after
        self._pairs: _Table[str] = _Table(limit=max_entries, forget_after=forget)
        self._addresses: _Table[str] = _Table(limit=max_entries, forget_after=forget)
        self._users: _Table[str] = _Table(limit=max_entries, forget_after=forget)

    def check(self, client: str, username: str) -> Refusal | None:
        """Whether an attempt for `username` from `client` must wait now (None: it may be tried); counts nothing."""
        return self._refusal(address_key(client), username[:_MAX_NAME], self.clock())

    def admit(self, client: str, username: str) -> Refusal | None:
        """Like `check`, and an admitted attempt is counted as a failure until `succeeded` takes it back."""
        now = self.clock()
        address, name = address_key(client), username[:_MAX_NAME]
        refusal = self._refusal(address, name, now)
        if refusal is not None:
            self._addresses.touch(address)
            self._pairs.touch(_pair(address, name))
            return refusal
        self._addresses.fail(address, now)
        self._pairs.fail(_pair(address, name), now)
        if self._users.fail(name, now).failures == self.policy.user_failures:
            log.warning("many failed logins for one user from many addresses", username=name)
        return None

    def succeeded(self, client: str, username: str) -> None:
        """The admitted attempt had the right password: the pair starts over, the others forget that one attempt."""
        address, name = address_key(client), username[:_MAX_NAME]
        self._pairs.drop(_pair(address, name))
        self._addresses.forgive(address)
        self._users.forgive(name)

    def user_failures(self, username: str) -> int:
        """Failed logins for `username` from every address that are still remembered."""
        counter = self._users.get(username[:_MAX_NAME], self.clock())
        return counter.failures if counter is not None else 0

    def under_attack(self, username: str) -> bool:
        """Whether `username` failed so often, from all addresses together, that its pairs get one free failure."""
        return self._under_attack(username[:_MAX_NAME], self.clock())

    def tracked(self) -> dict[str, int]:
        """How many counters each table holds (for tests and metrics)."""
        return {"pairs": len(self._pairs), "addresses": len(self._addresses), "users": len(self._users)}

    def _refusal(self, address: str, name: str, now: float) -> Refusal | None:
        policy = self.policy
        refusals: list[Refusal] = []
        counter = self._addresses.get(address, now)
        if counter is not None:
            wait = counter.last + policy.delay(counter.failures, free=policy.address_failures) - now
            if wait > 0:
                refusals.append(Refusal(wait, ThrottleScope.ADDRESS))
        counter = self._pairs.get(_pair(address, name), now)
        if counter is not None:
            free = min(1, policy.free_failures) if self._under_attack(name, now) else policy.free_failures
            wait = counter.last + policy.delay(counter.failures, free=free) - now
            if wait > 0:
                refusals.append(Refusal(wait, ThrottleScope.PAIR))
        return max(refusals, key=lambda refusal: refusal.wait, default=None)

    def _under_attack(self, name: str, now: float) -> bool:
        counter = self._users.get(name, now)
        return counter is not None and counter.failures >= self.policy.user_failures
