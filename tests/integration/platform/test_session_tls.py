"""Sessions over TLS (`wss://` and `https://`, as the real platform): the certificate is verified, and every
connection of the process shares one client context instead of loading the CA store once per connect."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xianyu_autoreply.platform.mtop_client import MtopClient
from xianyu_autoreply.platform.session import tls_context
from xianyu_autoreply.simulator import Simulator

from .test_session import Harness, eventually


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1 (PEM files)."""
    folder = tmp_path_factory.mktemp("tls")
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder(subject_name=_name("xar test CA"), issuer_name=_name("xar test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder(subject_name=_name("127.0.0.1"), issuer_name=ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(_pem(ca))
    paths["cert"].write_bytes(_pem(server))
    paths["key"].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
async def sim(certificates: dict[str, Path]) -> AsyncIterator[Simulator]:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(certificates["cert"], certificates["key"])
    simulator = Simulator()
    await simulator.start(host="127.0.0.1", port=0, ssl_context=server_context)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def mtop(sim: Simulator, certificates: dict[str, Path]) -> AsyncIterator[MtopClient]:
    # MTOP over https too, through httpx's transport seam with the test CA.
    verify = ssl.create_default_context(cafile=str(certificates["ca"]))
    transport = httpx.AsyncHTTPTransport(verify=verify)
    client = MtopClient(mtop_url=sim.mtop_url, passport_url=sim.passport_url, timeout=5.0, transport=transport)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def fresh_tls_context() -> Iterator[None]:
    """The process-wide client context is made on first use; each test here makes (and drops) its own."""
    tls_context.cache_clear()
    yield
    tls_context.cache_clear()


@pytest.fixture
def contexts_made(monkeypatch: pytest.MonkeyPatch) -> list[ssl.SSLContext]:
    """Every default client context made from now on (by us or by asyncio for a connection without one)."""
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = real(*args, **kwargs)  # type: ignore[arg-type]
        made.append(context)
        return context

    monkeypatch.setattr(ssl, "create_default_context", counting)
    return made


async def test_sessions_over_wss_answer_and_share_one_client_context(
    sim: Simulator,
    mtop: MtopClient,
    certificates: dict[str, Path],
    fresh_tls_context: None,
    contexts_made: list[ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["ca"]))  # trusted as a system store would be
    assert sim.ws_url.startswith("wss://")
    harnesses = [Harness(sim, mtop, sim.create_seller(nick=f"tls shop {n}")) for n in range(3)]
    try:
        for harness in harnesses:
            harness.start()
        for harness in harnesses:
            await harness.connected()
        pushed = [sim.push_message(seller=h.seller["unb"], text="还在吗") for h in harnesses]
        for harness, message in zip(harnesses, pushed, strict=True):
            sent = await eventually(lambda h=harness, m=message: h.sent(chat_id=m["chat_id"]))
            assert [s["text"] for s in sent] == ["re: 还在吗"]
    finally:
        for harness in harnesses:
            await harness.stop()
    assert len(contexts_made) == 1  # not one per connection


async def test_an_untrusted_certificate_is_refused_with_a_clear_reason(
    sim: Simulator, mtop: MtopClient, fresh_tls_context: None
) -> None:
    # The system store does not know the test CA: the session must not connect, and must say why.
    harness = Harness(sim, mtop, sim.create_seller(nick="untrusted"))
    try:
        harness.start()
        session = harness.session
        assert session is not None
        await eventually(lambda: "CERTIFICATE_VERIFY_FAILED" in (session.stats.last_error or ""))
        assert not session.connected and harness.state_names()[-1] in {"connecting", "reconnecting"}
        assert sim.connections() == []
    finally:
        await harness.stop()
