"""The `xianyu-autoreply` command line (typer): one sub-command per job of DESIGN.md §2."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from . import __version__

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
