"""`xianyu-autoreply accounts ...`: manage accounts in the configured database from the shell.

These commands write the database through the store (each change one transaction, an invalid cookie refused
before any write). A running `serve` picks the changes up when it restarts. Import is idempotent: running the
same file twice changes nothing the second time, and a bad row is reported without stopping the others.
Exports leave cookies out unless `--include-secrets` is given, and then the file is created readable by its owner only.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .config import ConfigError, load_settings
from .protocol import ProtocolError, parse_cookie
from .replies import Rule, rule_data, rule_from_data
from .store import AccountNotFound, AccountSettings, Conflict, Store, StoreError

app = typer.Typer(help="Manage seller accounts in the configured database.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _run(work: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store (migrating it), run `work`, close it; errors become a clean exit."""

    async def main() -> T:
        store = await Store.open(load_settings())
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        err.print(f"[red]configuration error[/red]: {exc}")
        raise typer.Exit(2) from None
    except (StoreError, ProtocolError) as exc:
        err.print(f"[red]error[/red]: {exc}")
        raise typer.Exit(1) from None


@app.command("list")
def list_accounts(
    owner: Annotated[str | None, typer.Option(help="Only this user's accounts.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List accounts (cookies masked)."""
    accounts = _run(lambda store: store.list_accounts(owner=owner))
    if as_json:
        rows = [
            {"id": a.id, "owner": a.owner, "enabled": a.enabled, "remark": a.remark, "cookie": a.cookie_masked}
            for a in accounts
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table("id", "seller", "owner", "enabled", "remark", "cookie")
    for a in accounts:
        table.add_row(a.id, a.seller_id, a.owner or "-", "yes" if a.enabled else "no", a.remark, a.cookie_masked)
    console.print(table)


@app.command("add")
def add_account(
    account_id: Annotated[str, typer.Argument(help="Your name for the account (letters, digits, - and _).")],
    cookie: Annotated[
        str | None, typer.Option(help="The browser cookie string; read from standard input when omitted.")
    ] = None,
    owner: Annotated[str | None, typer.Option(help="Owning user.")] = None,
    remark: Annotated[str, typer.Option(help="A note shown in the admin.")] = "",
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it without starting it.")] = False,
) -> None:
    """Add an account (the cookie is checked before anything is written)."""
    value = cookie if cookie is not None else sys.stdin.readline().strip()
    try:
        parse_cookie(value)
    except ProtocolError as exc:
        err.print(f"[red]invalid cookie[/red]: {exc}")
        raise typer.Exit(1) from None
    account = _run(
        lambda store: store.create_account(
            account_id, value, owner=owner, remark=remark, enabled=not disabled, actor="cli"
        )
    )
    console.print(
        f"added [bold]{account.id}[/bold] (seller {account.seller_id}, {'enabled' if account.enabled else 'disabled'})"
    )


@app.command("remove")
def remove_account(
    account_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete an account with its rules, settings, conversation log and orders."""
    if not yes:
        typer.confirm(f"Delete account {account_id} and everything that belongs to it?", abort=True)
    _run(lambda store: store.delete_account(account_id, actor="cli"))
    console.print(f"removed {account_id}")


def _set_enabled(account_id: str, enabled: bool) -> None:
    account = _run(lambda store: store.set_enabled(account_id, enabled, actor="cli"))
    console.print(f"{account.id}: {'enabled' if account.enabled else 'disabled'}")


@app.command("enable")
def enable_account(account_id: str) -> None:
    """Enable an account (a running server starts it on its next start)."""
    _set_enabled(account_id, True)


@app.command("disable")
def disable_account(account_id: str) -> None:
    """Disable an account."""
    _set_enabled(account_id, False)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
    )


@app.command("export")
def export_accounts(
    path: Annotated[Path, typer.Argument(help="JSON file to write ('-' for standard output).")],
    include_secrets: Annotated[
        bool, typer.Option("--include-secrets", help="Write cookies and proxies in clear text (file mode 0600).")
    ] = False,
) -> None:
    """Export accounts with their rules and settings as JSON."""

    async def work(store: Store) -> list[dict[str, Any]]:
        accounts = await store.list_accounts()
        rows: list[dict[str, Any]] = []
        with _progress() as progress:
            task = progress.add_task("exporting", total=len(accounts))
            for account in accounts:
                settings = await store.get_settings(account.id)
                row: dict[str, Any] = {
                    "id": account.id,
                    "owner": account.owner,
                    "enabled": account.enabled,
                    "remark": account.remark,
                    "rules": [_rule_json(r) for r in await store.get_rules(account.id)],
                    "settings": {
                        "default_reply": settings.default_reply,
                        "default_reply_once_per_chat": settings.default_reply_once_per_chat,
                        "debounce_seconds": settings.debounce_seconds,
                        "pause_minutes": settings.pause_minutes,
                        "auto_confirm": settings.auto_confirm,
                    },
                }
                if include_secrets:
                    secrets = await store.get_account_secrets(account.id)
                    row["cookie"], row["proxy"] = secrets.cookie, secrets.proxy
                else:
                    row["cookie_masked"] = account.cookie_masked
                rows.append(row)
                progress.advance(task)
        return rows

    rows = _run(work)
    text = json.dumps({"version": 1, "accounts": rows}, ensure_ascii=False, indent=2) + "\n"
    if str(path) == "-":
        typer.echo(text, nl=False)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if include_secrets else 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    err.print(f"exported {len(rows)} accounts to {path}")


@dataclass
class _RowResult:
    account_id: str
    outcome: str  # created | updated | unchanged | error
    detail: str = ""


@app.command("import")
def import_accounts(
    path: Annotated[Path, typer.Argument(help="JSON file written by `accounts export --include-secrets`.")],
) -> None:
    """Import accounts (idempotent): new ones are created, existing ones updated; bad rows reported and skipped."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        rows = document["accounts"] if isinstance(document, dict) else document
        if not isinstance(rows, list):
            raise ValueError("expected a list of accounts")
    except (OSError, ValueError, KeyError) as exc:
        err.print(f"[red]cannot read {path}[/red]: {exc}")
        raise typer.Exit(1) from None

    async def work(store: Store) -> list[_RowResult]:
        results: list[_RowResult] = []
        with _progress() as progress:
            task = progress.add_task("importing", total=len(rows))
            for index, row in enumerate(rows):
                results.append(await _import_row(store, index, row))
                progress.advance(task)
        return results

    results = _run(work)
    table = Table("id", "result", "detail")
    for r in results:
        colour = {"error": "red", "created": "green", "updated": "yellow"}.get(r.outcome, "white")
        table.add_row(r.account_id, f"[{colour}]{r.outcome}[/{colour}]", r.detail)
    console.print(table)
    counts = {k: sum(r.outcome == k for r in results) for k in ("created", "updated", "unchanged", "error")}
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()))
    if counts["error"]:
        raise typer.Exit(1)


async def _import_row(store: Store, index: int, row: Any) -> _RowResult:
    account_id = str(row.get("id", f"#{index}")) if isinstance(row, dict) else f"#{index}"
    try:
        if not isinstance(row, dict) or not isinstance(row.get("cookie"), str):
            raise ValueError("each account needs an `id` and a clear-text `cookie` (export with --include-secrets)")
        cookie = row["cookie"]
        parse_cookie(cookie)
        rules = [_rule_from_json(r) for r in row.get("rules", [])]
        settings = AccountSettings(**row["settings"]) if isinstance(row.get("settings"), dict) else None
        try:
            current = await store.get_account_secrets(account_id)
        except AccountNotFound:
            current = None
        if current is None:
            await store.create_account(
                account_id,
                cookie,
                owner=row.get("owner"),
                enabled=bool(row.get("enabled", True)),
                remark=str(row.get("remark", "")),
                proxy=row.get("proxy"),
                actor="cli-import",
            )
            outcome = "created"
        else:
            changed = False
            if current.cookie != cookie.strip():
                await store.update_cookie(account_id, cookie, actor="cli-import")
                changed = True
            if current.enabled != bool(row.get("enabled", True)):
                await store.set_enabled(account_id, bool(row.get("enabled", True)), actor="cli-import")
                changed = True
            outcome = "updated" if changed else "unchanged"
        if _comparable(await store.get_rules(account_id), rules) != _comparable(rules, rules):
            await store.replace_rules(account_id, rules, actor="cli-import")
            outcome = "updated" if outcome == "unchanged" else outcome
        if settings is not None and await store.get_settings(account_id) != settings:
            await store.put_settings(account_id, settings, actor="cli-import")
            outcome = "updated" if outcome == "unchanged" else outcome
        return _RowResult(account_id, outcome)
    except (ProtocolError, StoreError, Conflict, ValueError, TypeError) as exc:
        return _RowResult(account_id, "error", str(exc))


def _rule_json(rule: Rule) -> dict[str, Any]:
    return {"id": rule.id, **rule_data(rule)}  # the id first, as the export always wrote it


def _comparable(rules: list[Rule], wanted: list[Rule]) -> list[dict[str, Any]]:
    """Rules as data to compare; ids only count when the imported rules carry them (else the store made them)."""
    with_ids = all(r.id is not None for r in wanted)
    return [{k: v for k, v in _rule_json(r).items() if with_ids or k != "id"} for r in rules]


def _rule_from_json(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError("a rule must be an object")
    return rule_from_data(
        {**raw, "keyword": str(raw["keyword"]), "reply": str(raw["reply"]), "priority": int(raw.get("priority", 0))}
    )
