"""TLS per connection: what `wss://` adds over `ws://` to connect, idle memory and per-message CPU, on loopback.

    python -m bench tls [--quick]
    python -m bench.tls [--connects 200] [--idle 1000] [--idle-new-context 200] [--round-trips 20000]
                        [--key rsa|ec] [--tls 1.3|1.2] [--loops stdlib,uvloop] [--quick]

The real platform is `wss://` (TLS 1.2/1.3, a public certificate); the simulator every other bench uses is `ws://`.
Here a `websockets` echo server listens on two loopback ports, plain and TLS, in its own process; its certificate
chain is made at run time with `cryptography` (a self-signed root the client trusts through
`ssl.create_default_context()` + `load_verify_locations`, an intermediate, a leaf for `localhost`/127.0.0.1: the
shape of a public chain, so the client verifies what it verifies against the platform). The client connects to
`wss://localhost:<port>/` (SNI and hostname check as with a real name) over 127.0.0.1, with the options
`AccountSession` uses (no compression, no websockets ping).

Each loop kind (stdlib asyncio, uvloop) runs in forked children, apart from the other and from this process:

1. connect: `connect()` call to open (TCP + TLS handshake + HTTP upgrade), p50/p99 over sequential connects, and
   client CPU per connect (`time.process_time()` around the call); plain and TLS alternate in blocks of 10, so a
   drift in the machine's load hits both alike;
2. idle memory: RSS per open idle connection (`settle_memory()` before and after holding N of them), one fresh
   child per variant so that one variant's freed arenas do not host the next;
3. per message: client CPU per round trip of a ~300-byte text frame (send, receive the echo) over a few
   connections, plain and TLS alternating in blocks.

Besides "TLS" (one `SSLContext` shared by every connection) it measures "TLS, new context": an `SSLContext` made
per connect, which is what `websockets.connect(wss_url)` does when no `ssl=` is passed (asyncio and uvloop call
`ssl.create_default_context()` for `ssl=True`, loading the system CA store each time, and the connection holds it).

Loopback shows the compute and memory only: on the real network the handshake also adds one round trip to the
connect (TLS 1.3; two with TLS 1.2). Figures beside plain (and uvloop beside stdlib) as ratios; never a pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import multiprocessing.connection
import ssl
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from xianyu_autoreply.runtime import loop_factory

from .harness import environment, ratio, settle_memory, summary_ms, write_result

VARIANTS = ("plain", "tls", "tls_new_context")
LABELS = {"plain": "plain", "tls": "TLS", "tls_new_context": "TLS, new context"}
HOST = "localhost"  # the name in the URL: SNI and the hostname check; the socket goes to 127.0.0.1
BLOCK = 10  # connects per variant before switching to the next one


# --- certificates -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    root: Path  # the trust anchor the client loads
    chain: Path  # leaf + intermediate, what the server presents
    key: Path  # the leaf's private key
    key_kind: str


def make_chain(directory: Path, key_kind: str) -> Chain:
    """Root CA -> intermediate -> leaf for localhost/127.0.0.1, as PEM files in `directory`.

    A chain rather than one self-signed leaf: OpenSSL does not check a trust anchor's own signature, so a lone
    self-signed certificate would spare the client the signature checks a public chain costs it.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def new_key() -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        if key_kind == "rsa":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return ec.generate_private_key(ec.SECP256R1())

    now = datetime.now(UTC)

    def issue(
        cn: str,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        issuer: x509.Certificate | None,
        issuer_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.subject if issuer else name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=not ca,
                    content_commitment=False,
                    key_encipherment=not ca and key_kind == "rsa",
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=ca,
                    crl_sign=ca,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        if not ca:
            san = [x509.DNSName(HOST), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    root_key, mid_key, leaf_key = new_key(), new_key(), new_key()
    root = issue("bench root CA", root_key, None, root_key, ca=True)
    mid = issue("bench intermediate CA", mid_key, root, root_key, ca=True)
    leaf = issue(HOST, leaf_key, mid, mid_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = Chain(directory / "root.pem", directory / "chain.pem", directory / "leaf.key", key_kind)
    paths.root.write_bytes(root.public_bytes(pem))
    paths.chain.write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
    paths.key.write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def client_context(chain: Chain) -> ssl.SSLContext:
    """What a client verifying the platform builds: the default context (system CAs), plus our root."""
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(chain.root)
    return ctx


# --- children: forked, so they skip the service's imports and each runs one event loop of its own --------------


def _child(
    out: multiprocessing.connection.Connection,
    loop_kind: str,
    job: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
) -> None:
    """A child's body: one fresh event loop of `loop_kind`, the result (or the traceback) back through `out`."""
    try:
        with asyncio.Runner(loop_factory=loop_factory("uvloop" if loop_kind == "uvloop" else "asyncio")) as runner:
            out.send(("ok", runner.run(job(*args))))
    except BaseException:
        out.send(("error", traceback.format_exc()))
    finally:
        out.close()


def in_child(loop_kind: str, job: Callable[..., Awaitable[Any]], *args: Any, timeout: float = 600) -> Any:
    """Run `job(*args)` on a `loop_kind` event loop in a forked child and return its result."""
    mp = multiprocessing.get_context("fork")
    receive, send = mp.Pipe(duplex=False)
    proc = mp.Process(target=_child, args=(send, loop_kind, job, args), daemon=True)
    proc.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise TimeoutError(f"{job.__name__} on {loop_kind} took over {timeout:.0f} s")
        status, payload = receive.recv()
    except EOFError:
        proc.join(5)
        raise RuntimeError(f"{job.__name__} on {loop_kind}: child died (exit code {proc.exitcode})") from None
    finally:
        receive.close()
        if proc.is_alive():
            proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status == "error":
        raise RuntimeError(f"{job.__name__} on {loop_kind} failed:\n{payload}")
    return payload


# --- the server ---------------------------------------------------------------------------------------------------


async def _echo(ws: ServerConnection) -> None:
    """Send every message back; a client that just goes away (the idle children exit) is no error."""
    try:
        async for message in ws:
            await ws.send(message)
    except ConnectionClosed:
        pass


async def _serve(out: multiprocessing.connection.Connection, chain: Chain, tls_max: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain.chain, chain.key)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2 if tls_max == "1.2" else ssl.TLSVersion.MAXIMUM_SUPPORTED
    options: dict[str, Any] = {"compression": None, "ping_interval": None, "max_size": 1 << 20, "backlog": 1024}
    async with (
        serve(_echo, "127.0.0.1", 0, **options) as plain,
        serve(_echo, "127.0.0.1", 0, ssl=ctx, **options) as tls,
    ):
        out.send((plain.sockets[0].getsockname()[1], tls.sockets[0].getsockname()[1]))
        out.close()
        await asyncio.Future()  # until the parent terminates us


def _server_main(out: multiprocessing.connection.Connection, chain: Chain, tls_max: str) -> None:
    asyncio.run(_serve(out, chain, tls_max))


@dataclass(frozen=True)
class Server:
    plain_port: int
    tls_port: int


@contextmanager
def echo_server(chain: Chain, tls_max: str) -> Iterator[Server]:
    """The echo server (stdlib loop, the same for every client loop kind) in its own process."""
    mp = multiprocessing.get_context("fork")
    receive, send = mp.Pipe(duplex=False)
    proc = mp.Process(target=_server_main, args=(send, chain, tls_max), daemon=True)
    proc.start()
    send.close()
    try:
        if not receive.poll(30):
            raise RuntimeError("the echo server did not come up")
        plain_port, tls_port = receive.recv()
        yield Server(plain_port, tls_port)
    finally:
        receive.close()
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()


# --- the client -------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """Where and how one variant connects; `context()` runs inside the timed connect, as websockets runs it."""

    name: str
    url: str
    context: Callable[[], ssl.SSLContext | None]


def targets(server: Server, chain: Chain) -> dict[str, Target]:
    shared = client_context(chain)
    return {
        "plain": Target("plain", f"ws://{HOST}:{server.plain_port}/", lambda: None),
        "tls": Target("tls", f"wss://{HOST}:{server.tls_port}/", lambda: shared),
        "tls_new_context": Target("tls_new_context", f"wss://{HOST}:{server.tls_port}/", lambda: client_context(chain)),
    }


async def open_ws(target: Target) -> ClientConnection:
    """Connect with `AccountSession`'s options (platform/session.py), over 127.0.0.1."""
    return await connect(
        target.url,
        host="127.0.0.1",
        ssl=target.context(),
        compression=None,
        ping_interval=None,
        max_size=1 << 20,
        max_queue=64,
        open_timeout=60,
        close_timeout=5,
    )


def tls_info(ws: ClientConnection) -> dict[str, Any]:
    """Negotiated version and cipher, so the figures say which handshake they measured."""
    obj = ws.transport.get_extra_info("ssl_object")
    if obj is None:
        return {}
    cipher = obj.cipher()
    return {"version": obj.version(), "cipher": cipher[0] if cipher else None}


async def connect_job(server: Server, chain: Chain, names: list[str], connects: int) -> dict[str, Any]:
    """Sequential connects, the variants alternating in blocks of `BLOCK`; wall and CPU of the `connect()` only."""
    by_name = targets(server, chain)
    for name in names:  # warm-up: lazy imports, first handshakes, the server's caches
        for _ in range(3):
            await (await open_ws(by_name[name])).close()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    info: dict[str, Any] = {}
    while len(wall[names[0]]) < connects:
        for name in names:
            for _ in range(min(BLOCK, connects - len(wall[name]))):
                cpu0, t0 = time.process_time(), time.perf_counter()
                ws = await open_ws(by_name[name])
                t1, cpu1 = time.perf_counter(), time.process_time()
                wall[name].append((t1 - t0) * 1000)
                cpu[name] += cpu1 - cpu0
                info.setdefault(name, tls_info(ws))
                await ws.close()
    return {
        name: {"ms": summary_ms(wall[name]), "cpu_ms_per_connect": 1000 * cpu[name] / connects, **info[name]}
        for name in names
    }


async def idle_job(server: Server, chain: Chain, name: str, count: int) -> dict[str, Any]:
    """RSS per open idle connection: settle, open `count` (16 at a time), settle, read."""
    target = targets(server, chain)[name]
    await (await open_ws(target)).close()  # warm-up, so its one-off costs land in the baseline
    before = settle_memory()
    gate = asyncio.Semaphore(16)

    async def one() -> ClientConnection:
        async with gate:
            return await open_ws(target)

    held = await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(0.5)  # handshake leftovers (timers, buffers) go
    after = settle_memory()
    await asyncio.gather(*(ws.close() for ws in held))
    return {
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after - before) / count,
    }


async def round_trip_job(
    server: Server, chain: Chain, names: list[str], total: int, conns: int, size: int
) -> dict[str, Any]:
    """`total` echo round trips per variant over `conns` connections each, variants alternating in 10 blocks."""
    by_name = targets(server, chain)
    frame = text_frame(size)
    opened = {name: [await open_ws(by_name[name]) for _ in range(conns)] for name in names}

    async def trips(ws: ClientConnection, n: int) -> None:
        for _ in range(n):
            await ws.send(frame)
            await ws.recv()

    async def block(name: str, per_conn: int) -> tuple[float, float]:
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(trips(ws, per_conn) for ws in opened[name]))
        return time.process_time() - cpu0, time.perf_counter() - t0

    for name in names:
        await block(name, 50)  # warm-up
    per_block = max(1, total // (10 * conns))
    done = {n: 0 for n in names}
    cpu = dict.fromkeys(names, 0.0)
    wall = dict.fromkeys(names, 0.0)
    for _ in range(10):
        for name in names:
            c, w = await block(name, per_block)
            cpu[name] += c
            wall[name] += w
            done[name] += per_block * conns
    for wss in opened.values():
        await asyncio.gather(*(ws.close() for ws in wss))
    return {
        name: {
            "round_trips": done[name],
            "connections": conns,
            "frame_bytes": len(frame.encode()),
            "cpu_us_per_round_trip": 1e6 * cpu[name] / done[name],
            "wall_us_per_round_trip": 1e6 * wall[name] / done[name],
        }
        for name in names
    }


def text_frame(size: int) -> str:
    """A JSON text frame of `size` bytes, shaped like the platform's (`lwp`, `headers`, `body`)."""
    head = '{"lwp":"/r/MessageSend/sendByReceiverScope","headers":{"mid":"941795794963730 0"},"body":"'
    return head + "x" * max(0, size - len(head) - 2) + '"}'


# --- the run ------------------------------------------------------------------------------------------------------


def measure_loop(loop_kind: str, server: Server, chain: Chain, args: argparse.Namespace) -> dict[str, Any]:
    """The three figures for one client loop kind, each job in a forked child of its own."""
    started = time.perf_counter()
    idle = {
        name: in_child(
            loop_kind, idle_job, server, chain, name, args.idle_new_context if name == "tls_new_context" else args.idle
        )
        for name in VARIANTS
    }
    connects = in_child(loop_kind, connect_job, server, chain, list(VARIANTS), args.connects)
    trips = in_child(
        loop_kind, round_trip_job, server, chain, ["plain", "tls"], args.round_trips, args.conns, args.frame_bytes
    )
    return {"connect": connects, "idle": idle, "round_trip": trips, "seconds": time.perf_counter() - started}


def figures(loop: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The table's rows: figure -> variant -> value (round trips: plain and TLS only)."""
    c, i, r = loop["connect"], loop["idle"], loop["round_trip"]
    return {
        "connect p50, ms": {v: c[v]["ms"]["p50"] for v in c},
        "connect p99, ms": {v: c[v]["ms"]["p99"] for v in c},
        "client CPU per connect, ms": {v: c[v]["cpu_ms_per_connect"] for v in c},
        "idle RSS per connection, KiB": {v: i[v]["kib_per_conn"] for v in i},
        "client CPU per round trip, µs": {v: r[v]["cpu_us_per_round_trip"] for v in r},
        "wall / round trips, µs": {v: r[v]["wall_us_per_round_trip"] for v in r},
    }


def _num(value: float | None, width: int, digits: str, suffix: str = "") -> str:
    """`value` right-aligned in `width` (suffix included), or a dash where the figure is not measured."""
    text = "—" if value is None or value != value else f"{value:,{digits}}{suffix}"
    return f"{text:>{width}}"


def _over(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else ratio(value, reference)


def summary(result: dict[str, Any]) -> str:
    s = result["settings"]
    tls = result["tls"]
    lines = [
        f"loopback, echo server in its own process (stdlib loop); {tls['version']} {tls['cipher']}, "
        f"{tls['chain']}; options as AccountSession (no compression, no websockets ping)",
        f"connect: {s['connects']} sequential per variant; idle: {s['idle']:,} connections held "
        f"({s['idle_new_context']} for a new context each); round trips: {s['round_trips']:,} of a "
        f"{s['frame_bytes']}-byte text frame over {s['conns']} connections",
    ]
    for kind, loop in result["loops"].items():
        if "skipped" in loop:
            lines += ["", f"{kind}: skipped ({loop['skipped']})"]
            continue
        lines += [
            "",
            f"{kind} client loop ({loop['seconds']:.0f} s)",
            f"  {'figure':31} {'plain':>9} {'TLS':>9} {'TLS/plain':>10} {'TLS, new context':>17} {'/plain':>8}",
        ]
        for figure, row in figures(loop).items():
            plain, tls_v, new = row.get("plain"), row.get("tls"), row.get("tls_new_context")
            digits = ".0f" if "KiB" in figure else ".2f" if "ms" in figure else ".1f"
            lines.append(
                f"  {figure:31} {_num(plain, 9, digits)} {_num(tls_v, 9, digits)} "
                f"{_num(_over(tls_v, plain), 10, '.2f', 'x')} "
                f"{_num(new, 17, digits)} {_num(_over(new, plain), 8, '.1f', 'x')}"
            )
        added = result["tls_adds"][kind]
        lines += [
            f"  TLS adds per connection: {added['cpu_ms_per_connect']:+.2f} ms CPU per connect, "
            f"{added['kib_per_idle_conn']:+,.0f} KiB held, {added['cpu_us_per_round_trip']:+.1f} µs CPU per "
            f"round trip; a new context per connect: {added['new_context_cpu_ms_per_connect']:+.2f} ms CPU, "
            f"{added['new_context_kib_per_idle_conn']:+,.0f} KiB held",
            f"  at 5,000 connections: {5000 * added['kib_per_idle_conn'] / 1024:+,.0f} MiB held with a shared "
            f"context, {5000 * added['new_context_kib_per_idle_conn'] / 1024:+,.0f} MiB with a new context each",
        ]
    if result.get("uvloop_over_stdlib"):
        lines += ["", f"  {'uvloop ÷ stdlib':31} {'plain':>9} {'TLS':>9} {'':>10} {'TLS, new context':>17}"]
        for figure, row in result["uvloop_over_stdlib"].items():
            lines.append(
                f"  {figure:31} {_num(row.get('plain'), 9, '.2f', 'x')} {_num(row.get('tls'), 9, '.2f', 'x')} "
                f"{'':>10} {_num(row.get('tls_new_context'), 17, '.2f', 'x')}"
            )
    lines += [
        "",
        "—: not measured (once open, a connection on a new context sends and receives as one on the shared context)",
        "loopback shows compute and memory only: on the real network the TLS handshake also adds one round trip "
        "to each connect (TLS 1.3; two with TLS 1.2)",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    loops = [k.strip() for k in args.loops.split(",") if k.strip()]
    result: dict[str, Any] = {
        "environment": environment(),
        "settings": {
            k: getattr(args, k)
            for k in ("connects", "idle", "idle_new_context", "round_trips", "conns", "frame_bytes", "key", "tls")
        },
        "loops": {},
    }
    result["environment"]["openssl"] = ssl.OPENSSL_VERSION
    with tempfile.TemporaryDirectory(prefix="xar-bench-tls-") as tmp:
        chain = make_chain(Path(tmp), args.key)
        with echo_server(chain, args.tls) as server:
            for kind in loops:
                if kind == "uvloop" and importlib.util.find_spec("uvloop") is None:
                    print("uvloop is not installed: its figures are skipped", file=sys.stderr)
                    result["loops"][kind] = {"skipped": "uvloop not installed"}
                    continue
                print(f"  {kind} ...", file=sys.stderr, flush=True)
                result["loops"][kind] = measure_loop(kind, server, chain, args)
    measured = {k: v for k, v in result["loops"].items() if "skipped" not in v}
    if "uvloop" in measured:
        import uvloop

        result["environment"]["uvloop"] = uvloop.__version__
    first = next(iter(measured.values()))["connect"]["tls"]
    key = "RSA-2048" if args.key == "rsa" else "ECDSA P-256"
    result["tls"] = {"version": first["version"], "cipher": first["cipher"], "chain": f"{key} root/intermediate/leaf"}
    result["tls_adds"] = {
        kind: {
            "cpu_ms_per_connect": (c := loop["connect"])["tls"]["cpu_ms_per_connect"]
            - c["plain"]["cpu_ms_per_connect"],
            "kib_per_idle_conn": (i := loop["idle"])["tls"]["kib_per_conn"] - i["plain"]["kib_per_conn"],
            "cpu_us_per_round_trip": (r := loop["round_trip"])["tls"]["cpu_us_per_round_trip"]
            - r["plain"]["cpu_us_per_round_trip"],
            "new_context_cpu_ms_per_connect": c["tls_new_context"]["cpu_ms_per_connect"]
            - c["plain"]["cpu_ms_per_connect"],
            "new_context_kib_per_idle_conn": i["tls_new_context"]["kib_per_conn"] - i["plain"]["kib_per_conn"],
        }
        for kind, loop in measured.items()
    }
    result["ratios"] = {
        kind: {
            figure: {v: ratio(row[v], row["plain"]) for v in row if v != "plain"}
            for figure, row in figures(loop).items()
        }
        for kind, loop in measured.items()
    }
    if "stdlib" in measured and "uvloop" in measured:
        std, uv = figures(measured["stdlib"]), figures(measured["uvloop"])
        result["uvloop_over_stdlib"] = {f: {v: ratio(uv[f][v], std[f][v]) for v in std[f]} for f in std}
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench.tls", description=__doc__.splitlines()[0])
    p.add_argument("--connects", type=int, default=200, help="sequential connects per variant")
    p.add_argument("--idle", type=int, default=1000, help="idle connections held, plain and TLS")
    p.add_argument("--idle-new-context", type=int, default=200, help="idle connections held, a new context each")
    p.add_argument("--round-trips", type=int, default=20_000, help="echo round trips per variant")
    p.add_argument("--conns", type=int, default=4, help="connections the round trips are spread over")
    p.add_argument("--frame-bytes", type=int, default=300, help="size of the echoed text frame")
    p.add_argument("--key", choices=("rsa", "ec"), default="rsa", help="RSA-2048 or ECDSA P-256 chain")
    p.add_argument("--tls", choices=("1.3", "1.2"), default="1.3", help="highest version the server offers")
    p.add_argument("--loops", default="stdlib,uvloop", help="client loop kinds, comma-separated")
    p.add_argument("--quick", action="store_true", help="50 connects, 200 idle (50 new context), 3,000 round trips")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.quick:
        args.connects, args.idle = min(args.connects, 50), min(args.idle, 200)
        args.idle_new_context = min(args.idle_new_context, 50)
        args.round_trips = min(args.round_trips, 3000)
    result = run(args)
    print(summary(result))
    print(f"wrote {write_result('tls', result)}")
    return result


if __name__ == "__main__":
    main()
