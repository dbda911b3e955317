"""The outbound policy: which URLs an account owner may make the server fetch (pure checks, and the resolver seam)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from xianyu_autoreply.config import ConfigError, load_settings
from xianyu_autoreply.outbound import (
    OutboundGuard,
    OutboundPolicy,
    OutboundRefused,
    Purpose,
    address_refusal,
    check_url,
    notification_endpoints,
)

STRICT = OutboundPolicy()


def refusal(address: str, policy: OutboundPolicy = STRICT, *, host: str | None = None) -> str | None:
    return address_refusal(ipaddress.ip_address(address), policy, host=host)


# --- address classes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.5", "a private address"),
        ("172.16.3.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("100.64.0.1", "a carrier-grade NAT (shared) address"),
        ("100.127.255.254", "a carrier-grade NAT (shared) address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("::ffff:127.0.0.1", "a loopback address"),  # IPv4-mapped IPv6
        ("::ffff:10.1.2.3", "a private address"),
        ("64:ff9b::a00:1", "a private address"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
    ],
)
def test_each_internal_address_class_is_refused_by_default(address: str, kind: str) -> None:
    reason = refusal(address)
    assert reason is not None and reason.endswith(f" is {kind}; an administrator can allow it with XAR_OUTBOUND__ALLOW")
    assert reason.startswith(str(ipaddress.ip_address(address)))


def test_an_ipv6_address_carrying_an_ipv4_one_names_both() -> None:
    assert refusal("::ffff:127.0.0.1") == (
        "::ffff:7f00:1 (carrying 127.0.0.1) is a loopback address; "
        "an administrator can allow it with XAR_OUTBOUND__ALLOW"
    )


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"])
def test_cloud_metadata_addresses_are_refused_even_with_allow_private(address: str) -> None:
    for policy in (STRICT, OutboundPolicy(allow_private=True)):
        reason = refusal(address, policy)
        assert reason is not None and "cloud metadata address" in reason


def test_the_ipv4_mapped_form_of_the_metadata_address_is_refused_too() -> None:
    reason = refusal("::ffff:169.254.169.254", OutboundPolicy(allow_private=True))
    assert reason is not None and "cloud metadata" in reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "1.1.1.1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(address) is None


def test_allow_private_opens_every_address_class() -> None:
    policy = OutboundPolicy(allow_private=True)
    for address in ("127.0.0.1", "::1", "10.0.0.5", "169.254.1.1", "100.64.0.1", "fc00::1", "::ffff:127.0.0.1"):
        assert refusal(address, policy) is None


def test_the_allowlist_opens_exactly_what_it_lists() -> None:
    policy = OutboundPolicy.from_entries(["127.0.0.2/32", "10.1.0.0/16", "ollama.lan"])
    assert refusal("127.0.0.2", policy) is None
    assert refusal("::ffff:127.0.0.2", policy) is None  # the same address in its IPv6 form
    assert refusal("10.1.200.3", policy) is None
    assert refusal("127.0.0.1", policy) is not None  # the loopback next door stays closed
    assert refusal("10.2.0.1", policy) is not None
    assert refusal("192.168.1.1", policy) is not None
    assert refusal("192.168.1.1", policy, host="ollama.lan") is None  # a listed name opens what it resolves to
    assert refusal("192.168.1.1", policy, host="evil.ollama.lan") is not None  # not its subdomains
    assert refusal("169.254.169.254", policy) is not None  # metadata: not listed


def test_only_an_allow_entry_that_contains_a_metadata_address_opens_it() -> None:
    assert refusal("169.254.169.254", OutboundPolicy.from_entries(["169.254.169.254"])) is None
    assert refusal("169.254.169.254", OutboundPolicy.from_entries(["169.254.0.0/16"])) is None


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33", "http://x/", "a..b", ""])
def test_a_bad_allow_entry_is_refused(entry: str) -> None:
    if not entry:
        assert OutboundPolicy.from_entries([entry]) == OutboundPolicy()
        return
    with pytest.raises(ValueError, match="neither a network"):
        OutboundPolicy.from_entries([entry])


# --- URLs (pure) ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/_x",
        "ftp://example.com/",
        "dict://example.com:11211/",
        "ws://example.com/",
        "javascript:alert(1)",
        "example.com/hook",
        "//example.com/hook",
    ],
)
def test_webhook_and_ai_urls_must_be_http_or_https(url: str) -> None:
    for purpose in (Purpose.WEBHOOK, Purpose.AI):
        with pytest.raises(OutboundRefused, match="not allowed here; use http or https"):
            check_url(url, STRICT, purpose=purpose)


@pytest.mark.parametrize("scheme", ["http", "https", "socks5", "socks5h"])
def test_proxies_may_be_http_https_or_socks5(scheme: str) -> None:
    target = check_url(f"{scheme}://user:pw@proxy.example:3128", STRICT, purpose=Purpose.PROXY)
    assert (target.scheme, target.host, target.port, target.address) == (scheme, "proxy.example", 3128, None)


@pytest.mark.parametrize("url", ["socks4://proxy.example:1080", "file:///tmp/sock", "ftp://proxy.example"])
def test_other_proxy_schemes_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="use http or https or socks5 or socks5h"):
        check_url(url, STRICT, purpose=Purpose.PROXY)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:8080/admin", "127.0.0.1"),
        ("http://[::1]/", "::1"),
        ("http://10.0.0.5/v1", "10.0.0.5"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("http://0.0.0.0:8080/", "0.0.0.0"),
        ("http://100.64.1.1/", "100.64.1.1"),
        ("http://127.1/", "127.0.0.1"),  # legacy spellings read as the address they are
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
    ],
)
def test_an_address_literal_is_checked_without_any_lookup(url: str, address: str) -> None:
    with pytest.raises(OutboundRefused) as refused:
        check_url(url, STRICT, purpose=Purpose.WEBHOOK)
    assert refused.value.reason.startswith(str(ipaddress.ip_address(address)))
    assert " is a" in refused.value.reason
    assert str(refused.value).startswith("webhook URL refused: ")


def test_the_metadata_host_name_is_refused_before_any_lookup() -> None:
    with pytest.raises(OutboundRefused, match="cloud metadata service"):
        check_url("http://metadata.google.internal/computeMetadata/v1/", STRICT, purpose=Purpose.AI)


def test_a_url_without_a_host_is_refused_and_the_message_shows_no_credentials_or_path() -> None:
    with pytest.raises(OutboundRefused, match="has no host"):
        check_url("http:///only-a-path", STRICT, purpose=Purpose.WEBHOOK)
    with pytest.raises(OutboundRefused) as refused:
        check_url("http://user:s3cret@host:99999/token-in-path", STRICT, purpose=Purpose.WEBHOOK)
    assert "s3cret" not in str(refused.value) and "token-in-path" not in str(refused.value)


def test_a_public_host_name_passes_the_pure_check_unresolved() -> None:
    target = check_url("https://hooks.example.com/deliver?token=x", STRICT, purpose=Purpose.WEBHOOK)
    assert (target.host, target.port, target.address) == ("hooks.example.com", 443, None)


# --- apprise URLs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["file:///tmp/notes.txt", "dbus://", "glib://", "gnome://", "kde://", "macosx://", "windows://", "syslog://"],
)
def test_local_only_and_side_effect_apprise_schemes_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="notifications are not supported here"):
        notification_endpoints(url, STRICT)


def test_an_apprise_scheme_outside_the_allowlist_is_refused() -> None:
    with pytest.raises(OutboundRefused, match="mqtt:// notifications are not supported"):
        notification_endpoints("mqtt://broker.example/topic", STRICT)


def test_fixed_public_services_have_no_endpoint_to_check() -> None:
    for url in ("tgram://123456:SECRET-BOT-TOKEN/987654", "dingtalk://token/", "wecombot://key", "feishu://token"):
        assert notification_endpoints(url, STRICT) == []


def test_a_hosted_service_names_its_host() -> None:
    (target,) = notification_endpoints("json://hooks.example.com:8443/notify", STRICT)
    assert (target.host, target.port, target.address) == ("hooks.example.com", 8443, None)
    (ntfy,) = notification_endpoints("ntfys://ntfy.example.org/topic", STRICT)
    assert ntfy.host == "ntfy.example.org"
    assert notification_endpoints("ntfy://topic-on-ntfy-sh", STRICT) == []  # the service's own cloud


@pytest.mark.parametrize(
    "url",
    ["json://127.0.0.1:8080/notify", "xml://[::1]/x", "bark://10.0.0.5/key", "gotify://169.254.169.254/token"],
)
def test_a_hosted_service_on_an_internal_address_is_refused(url: str) -> None:
    with pytest.raises(OutboundRefused):
        notification_endpoints(url, STRICT)


def test_email_is_checked_at_its_smtp_server_not_its_domain() -> None:
    with pytest.raises(OutboundRefused, match=r"10\.0\.0\.1 is a private address"):
        notification_endpoints("mailtos://user:pw@example.org?smtp=10.0.0.1", STRICT)
    (gmail,) = notification_endpoints("mailto://user:pw@gmail.com", STRICT)
    assert gmail.host == "smtp.gmail.com"


# --- resolving: every address checked (a stub resolver, nothing leaves the machine) ------------------------------


def resolver(answers: dict[str, Sequence[str]]):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(answers[host])

    return resolve


async def test_a_host_name_that_resolves_to_loopback_is_refused() -> None:
    guard = OutboundGuard(resolver=resolver({"shop.example": ["127.0.0.1"]}))
    with pytest.raises(OutboundRefused) as refused:
        await guard.check("https://shop.example/hook", purpose=Purpose.WEBHOOK)
    assert refused.value.reason == (
        "shop.example resolves to 127.0.0.1, which is a loopback address; "
        "an administrator can allow it with XAR_OUTBOUND__ALLOW"
    )


async def test_one_internal_address_among_public_ones_refuses_the_name() -> None:
    guard = OutboundGuard(resolver=resolver({"mixed.example": ["93.184.215.14", "10.0.0.7"]}))
    with pytest.raises(OutboundRefused, match=r"10\.0\.0\.7, which is a private address"):
        await guard.addresses("mixed.example", 443)


async def test_a_name_resolving_to_public_addresses_is_allowed() -> None:
    guard = OutboundGuard(
        resolver=resolver({"api.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    )
    found = await guard.addresses("api.example", 443)
    assert [str(a) for a in found] == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    await guard.check("https://api.example/v1", purpose=Purpose.AI)


async def test_an_allowlisted_name_may_resolve_to_a_private_address() -> None:
    guard = OutboundGuard(
        OutboundPolicy.from_entries(["ollama.lan"]), resolver=resolver({"ollama.lan": ["192.168.1.20"]})
    )
    await guard.check("http://ollama.lan:11434/v1", purpose=Purpose.AI)


async def test_a_proxy_host_is_resolved_and_checked() -> None:
    guard = OutboundGuard(resolver=resolver({"proxy.example": ["172.16.0.9"]}))
    with pytest.raises(OutboundRefused, match=r"proxy URL refused: proxy\.example resolves to 172\.16\.0\.9"):
        await guard.check("socks5://u:p@proxy.example:1080", purpose=Purpose.PROXY)


async def test_a_notification_host_is_resolved_and_checked() -> None:
    guard = OutboundGuard(resolver=resolver({"hooks.example": ["100.64.3.3"]}))
    with pytest.raises(OutboundRefused, match="carrier-grade NAT"):
        await guard.check("jsons://hooks.example/notify", purpose=Purpose.NOTIFICATION)


async def test_a_lookup_failure_is_an_oserror_for_the_caller_to_judge() -> None:
    async def down(host: str, port: int) -> list[str]:
        raise OSError("temporary failure in name resolution")

    guard = OutboundGuard(resolver=down)
    with pytest.raises(OSError, match="temporary failure"):
        await guard.check("https://hooks.example/x", purpose=Purpose.WEBHOOK)
    with pytest.raises(OSError, match="no address"):
        await OutboundGuard(resolver=resolver({"empty.example": []})).addresses("empty.example", 80)


async def test_the_tests_never_resolve_a_name_for_real() -> None:
    """tests/conftest.py replaces the system resolver: a test that needs a name resolved must stub it."""
    with pytest.raises(OSError, match="no DNS lookups in tests"):
        await OutboundGuard().addresses("example.com", 443)


# --- configuration ------------------------------------------------------------------------------------------------


def test_the_settings_take_a_json_list_or_a_comma_separated_string(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().outbound.allow == [] and load_settings().outbound.allow_private is False
    monkeypatch.setenv("XAR_OUTBOUND__ALLOW", "127.0.0.1/32, 10.0.0.0/8,ollama.lan")
    monkeypatch.setenv("XAR_OUTBOUND__ALLOW_PRIVATE", "true")
    settings = load_settings()
    assert settings.outbound.allow == ["127.0.0.1/32", "10.0.0.0/8", "ollama.lan"]
    assert settings.outbound.allow_private is True
    monkeypatch.setenv("XAR_OUTBOUND__ALLOW", '["::1/128", "ai.internal"]')
    policy = OutboundPolicy.from_settings(load_settings().outbound)
    assert policy.allow_networks == (ipaddress.ip_network("::1/128"),) and policy.allow_hosts == {"ai.internal"}


def test_a_bad_allow_entry_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_OUTBOUND__ALLOW", "10.0.0.0/8,not a host")
    with pytest.raises(ConfigError, match=r"XAR_OUTBOUND__ALLOW: .*'not a host' is neither a network"):
        load_settings()
