"""The `xianyu-autoreply` command line (typer): one sub-command per job of DESIGN.md §2."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from . import __version__, runtime

app = typer.Typer(
    name="xianyu-autoreply",
    help="Keep many Xianyu (Goofish) seller accounts online and answer their buyers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xianyu-autoreply {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Keep many Xianyu (Goofish) seller accounts online and answer their buyers."""


@app.command()
def simulator(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one.", min=0, max=65535)] = 8765,
) -> None:
    """Run the local platform simulator alone (IM WebSocket, MTOP, passport, control API) and print its URLs."""
    from .simulator import run_simulator

    run_simulator(host, port)


@app.command()
def serve(
    no_engine: Annotated[
        bool, typer.Option("--no-engine", help="Serve the API and web admin only; workers run the accounts.")
    ] = False,
) -> None:
    """Run the API, the web admin and the account engine on the configured database (XAR_HOST:XAR_PORT)."""
    import contextlib

    from .api.server import run_server
    from .config import ConfigError, load_settings
    from .store import StoreError

    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None

    def ready(server: object) -> None:
        url = getattr(server, "url", "")
        loop = runtime.loop_name(settings.event_loop)
        console.print(f"serving on [bold]{url}[/bold] (API docs at {url}/docs, {loop}); Ctrl+C stops", highlight=False)

    try:
        with contextlib.suppress(KeyboardInterrupt):  # a Ctrl+C before the server's own handler is installed
            runtime.run(
                run_server(settings, engine_enabled=not no_engine, on_ready=ready, console=console),
                loop=settings.event_loop,
            )
    except OSError as exc:
        console.print(f"[red]cannot listen on {settings.host}:{settings.port}[/red]: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    except StoreError as exc:
        console.print(f"[red]database error[/red]: {exc}")
        raise typer.Exit(1) from None
    except runtime.EventLoopUnavailable as exc:
        console.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    port: Annotated[
        int, typer.Option(help="Admin port (a busy one is replaced by a free one; 0 picks one).", min=0, max=65535)
    ] = 8080,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Keep the demo's database here (default: a temporary dir).")
    ] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Stop by itself after this many seconds (default: run until Ctrl+C).", min=1)
    ] = None,
) -> None:
    """Run the simulator, the service and scripted buyers on loopback: open the printed URL and watch it reply."""
    import contextlib

    from .demo import run_demo

    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl+C before the server's own handler is installed
        try:
            runtime.run(run_demo(data_dir=data_dir, port=port, seconds=seconds, console=Console()))
        except OSError as exc:
            console.print(f"[red]cannot start the demo[/red]: {exc.strerror or exc}")
            raise typer.Exit(1) from None


@app.command()
def worker() -> None:
    """Run the account engine only, as one node of several on one PostgreSQL (docs/scale-out.md).

    It runs the accounts of the buckets it leases; SIGTERM or Ctrl+C stops its sessions and hands its buckets to
    the other workers at once. XAR_CLUSTER__* tune it (node id, buckets, lease TTL and margin).
    """
    import asyncio
    import logging
    import signal

    from .config import ConfigError, load_settings
    from .engine.cluster import Node
    from .log import configure_logging
    from .store import Store, StoreError

    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None
    configure_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per MTOP call drowns the node's own events

    async def run() -> None:
        # Signals live here, in the runner: the node only offers start() and stop().
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        store = await Store.open(settings)
        node = Node(store=store, settings=settings)
        try:
            await node.start()
            console.print(f"worker {node.node_id} running; SIGTERM hands its accounts over", highlight=False)
            await stop.wait()
        finally:
            await node.stop()
            await store.close()

    try:
        runtime.run(run(), loop=settings.event_loop)
    except StoreError as exc:
        console.print(f"[red]database error[/red]: {exc}")
        raise typer.Exit(1) from None
    except runtime.EventLoopUnavailable as exc:
        console.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None


users_app = typer.Typer(help="Users of the web admin and API.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Login name (no spaces, '/', '?', '#' or '%').")],
    password: Annotated[
        str | None, typer.Option(help="The password (at least 8 characters); asked for when omitted.")
    ] = None,
    role: Annotated[str, typer.Option(help="admin or user.")] = "user",
) -> None:
    """Create a user who can log in to the web admin and the API."""
    import asyncio

    from .api.auth import hash_password
    from .config import ConfigError, load_settings
    from .store import Store, StoreError

    if role not in ("admin", "user"):
        console.print("[red]--role must be admin or user[/red]")
        raise typer.Exit(2)
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        console.print("[red]a password has at least 8 characters[/red]")
        raise typer.Exit(2)

    async def create() -> None:
        store = await Store.open(load_settings())
        try:
            await store.create_user(username, await hash_password(password), role=role, actor="cli")
        finally:
            await store.close()

    try:
        asyncio.run(create())
    except ConfigError as exc:
        console.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None
    except StoreError as exc:
        console.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"created {role} {username}")


db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the configured database to this version's schema (start-up does this too)."""
    import asyncio

    from .config import ConfigError, load_settings
    from .store import Database, current_revision, upgrade_database

    try:
        settings = load_settings()
    except ConfigError as exc:
        console.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None

    async def upgrade() -> str | None:
        await upgrade_database(settings.database_url)
        db = Database(settings.database_url)
        try:
            return await current_revision(db)
        finally:
            await db.close()

    typer.echo(f"database at revision {asyncio.run(upgrade())}")


def _accounts() -> None:
    from .cli_accounts import app as accounts_app

    app.add_typer(accounts_app, name="accounts")


_accounts()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
