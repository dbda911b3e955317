"""`xianyu-autoreply demo` as a newcomer runs it: a subprocess that prints the admin URL and a live conversation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from xianyu_autoreply.demo import DEMO_SHOPS, conversation_line
from xianyu_autoreply.engine.events import MessageIn


@pytest.mark.timeout(180)
def test_demo_prints_the_admin_url_and_replies_to_scripted_buyers(tmp_path: Path) -> None:
    # A clean environment: no XAR_* from the developer's shell, no .env in the working directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("XAR_")}
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    done = subprocess.run(
        [sys.executable, "-m", "xianyu_autoreply", "demo", "--port", "0", "--seconds", "12"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr + out
    assert re.search(r"http://127\.0\.0\.1:\d+/", out), out
    assert re.search(r"admin / \S+", out), out
    buyers = [line for line in out.splitlines() if " 买家 " in line]
    replies = [line for line in out.splitlines() if "-> 回复" in line]
    assert buyers, out
    assert replies, out
    assert any("规则「" in line for line in replies), out  # a keyword rule answered, named by its keyword
    assert "demo stopped" in out
    assert "Traceback" not in done.stderr, done.stderr


def test_conversation_lines_escape_buyer_markup() -> None:
    shops = {s.account_id: s.nick for s in DEMO_SHOPS}
    event = MessageIn(
        account_id="demo-books", chat_id="c", message_id="m", sender="[red]x", text="[bold]hi[/bold]", own=False
    )
    line = conversation_line(event, shops)
    assert line is not None
    assert "\\[bold]hi\\[/bold]" in line
    assert "二手书屋" in line
