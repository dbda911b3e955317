"""Outbound URLs are not a way in: the policy for every URL an account owner chooses and the server fetches.

Account owners, not administrators, choose webhook delivery URLs (`engine/orders/webhook.py`), apprise notification URLs
(`engine/notify.py`), AI base URLs (`platform/ai.py`) and proxies (`platform/mtop_client.py`, `platform/session.py`),
and the server fetches them from inside its own network. Unchecked, an owner could point one at the cloud metadata
service, an admin port on 127.0.0.1 or a database on 10.x, and read the answer back (a webhook's answer is
delivered to a buyer, who may be the owner). The platform URLs (`XAR_PLATFORM__*`) are the administrator's and
are not checked here.

Pure (no I/O): `OutboundPolicy` and `check_url(url, policy, purpose=...)`: the scheme, the host and, for an
address literal, its class -> a `Target`, or `OutboundRefused` with the reason. `address_refusal` is the address
rule alone; `notification_endpoints` names the hosts an apprise URL makes apprise connect to.
I/O: `OutboundGuard` resolves a name (async getaddrinfo) and checks EVERY address it resolves to (the connect
could pick any of them); `GuardedTransport` is an httpx transport whose every connection - redirects included -
resolves, checks and then connects to the very address it checked (the TLS name and the Host header stay the
URL's name), so a name that answers a public address to the check and 127.0.0.1 to the connect gets nowhere.

Refused by default: loopback, private (RFC 1918, fc00::/7), link-local, CGNAT (100.64/10), unspecified, multicast,
reserved and other non-global addresses, the IPv4 address inside an IPv6 one (IPv4-mapped, NAT64, 6to4), and the
cloud metadata addresses and names. `XAR_OUTBOUND__ALLOW_PRIVATE` opens every address class; `XAR_OUTBOUND__ALLOW`
lists networks (CIDR) and host names open even though private, and opens exactly those: a name opens what it
resolves to when a URL names it (not its subdomains). Metadata addresses stay refused under ALLOW_PRIVATE: only an
ALLOW entry that contains them (or names them) opens them, because no product feature needs them and they hand out
cloud credentials.

Limits, time of check to time of use (docs/security.md):
- apprise has its own HTTP and SMTP stack: its hosts are checked at save time and before each send, but apprise
  resolves them again itself and follows redirects unchecked, so a name that rebinds in between, or a server that
  redirects, reaches an address never checked. Only "sent / not sent" comes back (a blind request at most).
- proxies: checked at save time and before each connect (every session connect, and when the MTOP client for that
  proxy is made), but httpx and websockets resolve the proxy's name again themselves: the same window.
- a name that does not resolve when it is saved is saved (DNS may be down); it is checked when it is fetched.
An egress firewall closes what these checks cannot.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpcore
import httpx

if TYPE_CHECKING:
    from .config import OutboundSettings

__all__ = [
    "ALLOW_VARIABLE",
    "GuardedBackend",
    "GuardedTransport",
    "OutboundGuard",
    "OutboundPolicy",
    "OutboundRefused",
    "Purpose",
    "Resolver",
    "Target",
    "address_refusal",
    "check_url",
    "notification_endpoints",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_VARIABLE = "XAR_OUTBOUND__ALLOW"
_HINT = f"an administrator can allow it with {ALLOW_VARIABLE}"


class Purpose(enum.StrEnum):
    """What a URL is for: it decides the schemes allowed and names the URL in a refusal."""

    WEBHOOK = "webhook"
    AI = "ai"
    NOTIFICATION = "notification"
    PROXY = "proxy"


_SCHEMES: dict[Purpose, frozenset[str]] = {
    Purpose.WEBHOOK: frozenset({"http", "https"}),
    Purpose.AI: frozenset({"http", "https"}),
    Purpose.PROXY: frozenset({"http", "https", "socks5", "socks5h"}),  # what both httpx and websockets speak
}

# Where the cloud providers answer with instance credentials: AWS/GCP/Azure/OpenStack, AWS ECS tasks, Alibaba
# Cloud (CGNAT, refused anyway, but named here so that ALLOW_PRIVATE does not open it), AWS over IPv6.
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_METADATA_HOSTS = frozenset({"metadata.google.internal"})

# The stdlib has no property for these two: shared address space (RFC 6598) and the NAT64 well-known prefix.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

# A host made of digits, dots and hex markers is an IPv4 address in one of the legacy forms every resolver still
# accepts (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`): read it as the address it is.
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


class OutboundRefused(ValueError):
    """A URL the policy refuses; `reason` says why in words an owner can act on (and names the setting)."""

    def __init__(self, reason: str, *, purpose: Purpose | None = None) -> None:
        self.reason = reason
        self.purpose = purpose
        super().__init__(f"{purpose} URL refused: {reason}" if purpose is not None else reason)


# --- the policy (pure) -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """Which addresses owners' URLs may reach: public ones, plus what the administrator opened."""

    allow_private: bool = False
    allow_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str], *, allow_private: bool = False) -> OutboundPolicy:
        """A policy from `XAR_OUTBOUND__ALLOW` entries (CIDRs, addresses, host names); ValueError names a bad one."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = _normal_host(entry)
            if not _HOST_NAME.match(name):
                raise ValueError(f"{entry!r} is neither a network (CIDR), an address nor a host name")
            hosts.add(name)
        return cls(allow_private=allow_private, allow_networks=tuple(networks), allow_hosts=frozenset(hosts))

    @classmethod
    def from_settings(cls, settings: OutboundSettings) -> OutboundPolicy:
        """The policy the administrator configured (`XAR_OUTBOUND__*`)."""
        return cls.from_entries(settings.allow, allow_private=settings.allow_private)

    def lists(self, address: IPAddress, *, host: str | None = None) -> bool:
        """True when an ALLOW entry opens `address` (a network holding it) or `host` (by name)."""
        if host is not None and _normal_host(host) in self.allow_hosts:
            return True
        inner = _embedded_ipv4(address)
        return any(address in net or (inner is not None and inner in net) for net in self.allow_networks)


@dataclass(frozen=True, slots=True)
class Target:
    """A URL that passed the pure check: where it goes; `address` is set when the host is an address literal."""

    scheme: str
    host: str
    port: int
    address: IPAddress | None


def address_refusal(address: IPAddress, policy: OutboundPolicy, *, host: str | None = None) -> str | None:
    """Why the policy refuses `address` (reached through the name `host`, if any); None when it allows it."""
    inner = _embedded_ipv4(address)
    spelled = f"{address} (carrying {inner})" if inner is not None else str(address)
    shown = f"{host} resolves to {spelled}, which" if host is not None and host != str(address) else spelled
    if policy.lists(address, host=host):
        return None
    if address in _METADATA_ADDRESSES or inner in _METADATA_ADDRESSES:
        return f"{shown} is a cloud metadata address; only an explicit {ALLOW_VARIABLE} entry opens it"
    kind = _address_class(inner or address)
    if kind is None or policy.allow_private:
        return None
    return f"{shown} is {kind}; {_HINT}"


def _address_class(address: IPAddress) -> str | None:
    """The class that makes `address` internal, in words (None: a global unicast address)."""
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address in _SHARED:
        return "a carrier-grade NAT (shared) address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, NAT64, 6to4): the one the packets end up at."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _literal(host: str) -> IPAddress | None:
    """The address a URL host spells, in any form a resolver would read as one; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))  # parses only: no lookup
        except OSError:
            return None
    return None


def check_url(url: str, policy: OutboundPolicy, *, purpose: Purpose) -> Target:
    """The pure check of a webhook, AI or proxy URL: scheme, host, and an address literal's class.

    A host name passes here; its addresses are checked when it is resolved (`OutboundGuard`). Raises
    `OutboundRefused` with the reason.
    """
    schemes = _SCHEMES.get(purpose)
    if schemes is None:
        raise ValueError(f"check_url does not check {purpose} URLs (apprise URLs: notification_endpoints)")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"{_shown(url)} is not a valid URL ({exc})", purpose=purpose) from None
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        allowed = " or ".join(sorted(schemes))
        what = f"{scheme}: URLs are" if scheme else "a URL without a scheme is"
        raise OutboundRefused(f"{what} not allowed here; use {allowed}", purpose=purpose)
    host = _normal_host(parts.hostname or "")
    if not host:
        raise OutboundRefused(f"{_shown(url)} has no host", purpose=purpose)
    default_port = {"http": 80, "https": 443}.get(scheme, 1080)
    return _target(scheme, host, port or default_port, policy, purpose=purpose)


def _target(scheme: str, host: str, port: int, policy: OutboundPolicy, *, purpose: Purpose) -> Target:
    address = _literal(host)
    if address is not None:
        if (reason := address_refusal(address, policy)) is not None:
            raise OutboundRefused(reason, purpose=purpose)
    elif host in _METADATA_HOSTS and host not in policy.allow_hosts:
        raise OutboundRefused(
            f"{host} is a cloud metadata service; only an explicit {ALLOW_VARIABLE} entry opens it", purpose=purpose
        )
    return Target(scheme, host, port, address)


def _shown(url: str) -> str:
    """A URL for a message: scheme and host only (its credentials, path or query may carry a token)."""
    try:
        parts = urlsplit(url.strip())
        return repr(f"{parts.scheme}://{parts.hostname or ''}"[:80]) if parts.scheme else "the URL"
    except ValueError:
        return "the URL"


# --- apprise URLs (pure: apprise parses, nothing is sent) ------------------------------------------------------

# An allowlist, not a denylist: apprise adds services every release, and some of them act on this machine
# (file/attachment writes, dbus, glib, gnome, kde, macosx, windows, syslog, ...) or take the real endpoint from a
# query parameter. A scheme is added here once it has been read: either its host is the network endpoint
# (checked like any URL), or it talks to one fixed public service whatever the URL says.
# fmt: off
_APPRISE_HOSTED = frozenset(
    {
        "json", "jsons", "xml", "xmls", "form", "forms",  # generic webhooks: the host is the endpoint
        "mailto", "mailtos",  # email: the SMTP server (?smtp=, or the one apprise derives from the domain)
        "bark", "barks", "ntfy", "ntfys", "gotify", "gotifys", "pushdeer", "pushdeers", "apprise", "apprises",
    }
)
_APPRISE_FIXED = frozenset(
    {
        "tgram", "discord", "slack", "dingtalk", "feishu", "lark", "wecombot", "pushplus", "schan", "wxpusher",
        "qq", "pover", "pbul", "gchat",
    }
)
# fmt: on
APPRISE_SCHEMES = _APPRISE_HOSTED | _APPRISE_FIXED


def notification_endpoints(url: str, policy: OutboundPolicy) -> list[Target]:
    """The hosts apprise would connect to for `url` (none for a fixed public service), each checked as far as
    it can be without DNS; raises `OutboundRefused` for a scheme outside the allowlist or a URL apprise refuses.

    Imports apprise (slow the first time): call it off the event loop.
    """
    purpose = Purpose.NOTIFICATION
    scheme = url.strip().partition("://")[0].lower() if "://" in url else ""
    if scheme not in APPRISE_SCHEMES:
        shown = f"{scheme}:// notifications are" if scheme else "a notification URL without a scheme is"
        raise OutboundRefused(
            f"{shown} not supported here; use one of {', '.join(sorted(APPRISE_SCHEMES))}", purpose=purpose
        )
    import apprise

    plugin: Any = apprise.Apprise.instantiate(url.strip(), suppress_exceptions=True)
    if plugin is None:
        raise OutboundRefused(f"apprise cannot read this {scheme}:// URL", purpose=purpose)
    if scheme in _APPRISE_FIXED:
        return []
    host = _normal_host(str(getattr(plugin, "smtp_host", None) or plugin.host or ""))
    if not host:
        return []  # the service's own cloud (ntfy.sh, api2.pushdeer.com)
    port = plugin.port or (443 if getattr(plugin, "secure", False) else 80)
    return [_target(scheme, host, int(port), policy, purpose=purpose)]


# --- resolving and checking (I/O) ------------------------------------------------------------------------------

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`, in its order (async getaddrinfo)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class OutboundGuard:
    """The policy plus a resolver: checks what a name resolves to, and makes the clients that fetch owners' URLs.

    `resolver` is the seam for tests (a stub answering 127.0.0.1 for a name); by default the system's.
    """

    def __init__(
        self, policy: OutboundPolicy | None = None, *, resolver: Resolver | None = None, timeout: float = 5.0
    ) -> None:
        self.policy = policy or OutboundPolicy()
        self._resolver = resolver
        self.timeout = timeout

    async def addresses(self, host: str, port: int, *, purpose: Purpose | None = None) -> list[IPAddress]:
        """Every address `host` resolves to, once each was checked; `OutboundRefused` when any one is refused.

        A lookup that fails or times out raises OSError (TimeoutError is one): the caller decides what it means.
        """
        name = _normal_host(host)
        literal = _literal(name)
        if literal is not None:
            if (reason := address_refusal(literal, self.policy)) is not None:
                raise OutboundRefused(reason, purpose=purpose)
            return [literal]
        resolver = self._resolver or system_resolver
        async with asyncio.timeout(self.timeout):
            answers = await resolver(name, port)
        found: list[IPAddress] = []
        for answer in answers:
            try:
                found.append(ipaddress.ip_address(answer))
            except ValueError:
                raise OSError(f"{name} resolved to {answer!r}, which is not an address") from None
        if not found:
            raise OSError(f"{name} has no address")
        for address in found:
            if (reason := address_refusal(address, self.policy, host=name)) is not None:
                raise OutboundRefused(reason, purpose=purpose)
        return found

    async def check(self, url: str, *, purpose: Purpose) -> None:
        """The whole check of one URL: the pure part, then every address of its host(s).

        Raises `OutboundRefused` when the policy refuses it, OSError when a host cannot be resolved (the caller
        decides: a save accepts it and the fetch checks again, a connect retries as for any lookup failure).
        """
        if purpose is Purpose.NOTIFICATION:
            targets = await asyncio.to_thread(notification_endpoints, url, self.policy)
        else:
            targets = [check_url(url, self.policy, purpose=purpose)]
        for target in targets:
            if target.address is None:  # a literal was checked by the pure part
                await self.addresses(target.host, target.port, purpose=purpose)

    def transport(self, *, limits: httpx.Limits | None = None) -> GuardedTransport:
        """An httpx transport that connects only to addresses this guard just checked."""
        return GuardedTransport(self, limits=limits or httpx.Limits())

    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client through `transport()`: no redirects followed unless asked, no proxy from the
        environment (a proxy would fetch the URL on our behalf, past the check)."""
        kwargs.setdefault("follow_redirects", False)
        return httpx.AsyncClient(transport=self.transport(), trust_env=False, **kwargs)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the check in the connect: resolve, check every address, connect to one
    of the checked addresses. httpcore still does TLS with the URL's name (SNI, certificate) and httpx still
    sends its Host header: only the socket's destination is pinned."""

    def __init__(self, guard: OutboundGuard) -> None:
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._guard.addresses(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise OutboundRefused("a Unix socket is not an outbound URL")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verified client context for every guarded transport (building one loads the CA store: ~25 ms).
    SSL_CERT_FILE / SSL_CERT_DIR are honoured, as httpx does: they choose whom to trust, not where to connect."""
    return httpx.create_ssl_context(trust_env=True)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` over a connection pool whose connects go through `GuardedBackend`.

    Every connection, the ones a redirect opens included, is checked when it is made; a pooled connection is
    only reused for the same scheme, host and port, i.e. to the address already checked.
    """

    def __init__(self, guard: OutboundGuard, *, limits: httpx.Limits) -> None:
        # Not super().__init__(): it would build a pool (and an SSL context) only for us to replace it.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_tls_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,  # the SSL context is shared: its ALPN list must stay http/1.1 for every transport
            network_backend=GuardedBackend(guard),
        )
