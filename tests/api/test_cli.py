"""`xianyu-autoreply serve` as a real process (listens, stops cleanly on SIGINT/SIGTERM) and `users create`."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from xianyu_autoreply.api.auth import verify_password
from xianyu_autoreply.cli import app
from xianyu_autoreply.config import load_settings
from xianyu_autoreply.store import Store


def _no_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return True
    return False


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
    env.update(XAR_DATA_DIR=str(data_dir), XAR_PORT="0", XAR_HOST="127.0.0.1", COLUMNS="200", **extra)
    return env


@pytest.mark.parametrize(
    ("stop_signal", "args", "engine", "event_loop"),
    [(signal.SIGINT, [], "running", "auto"), (signal.SIGTERM, ["--no-engine"], "disabled", "asyncio")],
    ids=["sigint-auto-loop", "sigterm-no-engine-asyncio"],
)
def test_serve_answers_and_stops_cleanly_on_a_signal(
    tmp_path: Path, stop_signal: signal.Signals, args: list[str], engine: str, event_loop: str
) -> None:
    command = [sys.executable, "-m", "xianyu_autoreply.cli", "serve", *args]
    env = _env(tmp_path / "data", XAR_ADMIN_PASSWORD="cli-admin-pass", XAR_EVENT_LOOP=event_loop)
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        url = None
        seen = []
        for line in process.stderr:
            seen.append(line)
            found = re.search(r"serving on (http://[\d.]+:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(seen)
        # `auto` runs on uvloop when it is installed (the test extra installs it), `asyncio` on the stdlib loop.
        expected_loop = "asyncio" if event_loop == "asyncio" or _no_uvloop() else "uvloop"
        assert f", {expected_loop})" in seen[-1], seen[-1]
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["engine"] == engine
        token = httpx.post(
            f"{url}/api/v1/auth/token", data={"username": "admin", "password": "cli-admin-pass"}, timeout=10
        )
        assert token.status_code == 200
        process.send_signal(stop_signal)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 0, rest
    assert "Traceback" not in rest


async def _password_matches(username: str, password: str) -> bool:
    store = await Store.open(load_settings())
    try:
        credentials = await store.get_user_credentials(username)
    finally:
        await store.close()
    return await verify_password(credentials.password_hash, password)


def test_users_create_makes_a_user_who_can_sign_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _env(tmp_path / "data").items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["users", "create", "clerk", "--role", "user"], input="clerk-password\n" * 2)
    assert result.exit_code == 0, result.output
    assert "created user clerk" in result.output
    assert asyncio.run(_password_matches("clerk", "clerk-password"))
    again = CliRunner().invoke(app, ["users", "create", "clerk", "--password", "clerk-password"])
    assert again.exit_code == 1
    short = CliRunner().invoke(app, ["users", "create", "clerk2", "--password", "short"])
    assert short.exit_code == 2
