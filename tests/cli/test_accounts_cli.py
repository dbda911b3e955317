"""`xianyu-autoreply accounts ...` and `db upgrade` on a real SQLite file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xianyu_autoreply.cli import app

COOKIE = "unb=2200000000001; _m_h5_tk=abcdef0123456789abcdef0123456789_1700000000000; cookie2=verysecretvalue42"
OTHER = "unb=2200000000002; _m_h5_tk=0123456789abcdef0123456789abcdef_1700000000000; cookie2=anothersecret77"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in list(os.environ):
        if name.startswith("XAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XAR_DATA_DIR", str(tmp_path / "data"))
    return CliRunner()


def test_db_upgrade_migrates_the_configured_database(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "revision" in result.output
    assert (tmp_path / "data" / "xianyu.db").exists()


def test_add_list_disable_remove(runner: CliRunner) -> None:
    assert runner.invoke(app, ["accounts", "add", "shop1", "--cookie", COOKIE, "--remark", "一号店"]).exit_code == 0
    listed = runner.invoke(app, ["accounts", "list", "--json"])
    rows = json.loads(listed.output)
    assert [r["id"] for r in rows] == ["shop1"] and rows[0]["enabled"] is True
    assert "verysecretvalue42" not in listed.output
    assert runner.invoke(app, ["accounts", "disable", "shop1"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["accounts", "list", "--json"]).output)[0]["enabled"] is False
    assert runner.invoke(app, ["accounts", "remove", "shop1", "--yes"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["accounts", "list", "--json"]).output) == []


def test_an_invalid_cookie_is_refused_and_nothing_is_written(runner: CliRunner) -> None:
    result = runner.invoke(app, ["accounts", "add", "bad", "--cookie", "_m_h5_tk=abc; cookie2=x"])
    assert result.exit_code == 1
    assert "unb" in result.output
    assert json.loads(runner.invoke(app, ["accounts", "list", "--json"]).output) == []


def test_removing_an_unknown_account_is_a_clean_error(runner: CliRunner) -> None:
    result = runner.invoke(app, ["accounts", "remove", "ghost", "--yes"])
    assert result.exit_code == 1 and "ghost" in result.output


def test_export_hides_cookies_unless_asked_and_then_is_private(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(app, ["accounts", "add", "shop1", "--cookie", COOKIE])
    masked = runner.invoke(app, ["accounts", "export", "-"])
    assert "verysecretvalue42" not in masked.output and "cookie_masked" in masked.output
    path = tmp_path / "backup.json"
    assert runner.invoke(app, ["accounts", "export", str(path), "--include-secrets"]).exit_code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["accounts"][0]["cookie"] == COOKIE


def test_import_is_idempotent_and_reports_bad_rows_without_stopping(runner: CliRunner, tmp_path: Path) -> None:
    document = {
        "version": 1,
        "accounts": [
            {"id": "good1", "cookie": COOKIE, "rules": [{"keyword": "价格", "reply": "不议价"}]},
            {"id": "broken", "cookie": "not a cookie"},
            {"id": "good2", "cookie": OTHER, "enabled": False, "settings": {"default_reply": "在的"}},
        ],
    }
    path = tmp_path / "import.json"
    path.write_text(json.dumps(document, ensure_ascii=False))
    first = runner.invoke(app, ["accounts", "import", str(path)])
    assert first.exit_code == 1  # one row failed
    assert "2 created" in first.output and "1 error" in first.output
    rows = {r["id"]: r for r in json.loads(runner.invoke(app, ["accounts", "list", "--json"]).output)}
    assert set(rows) == {"good1", "good2"} and rows["good2"]["enabled"] is False
    document["accounts"].pop(1)
    path.write_text(json.dumps(document, ensure_ascii=False))
    again = runner.invoke(app, ["accounts", "import", str(path)])
    assert again.exit_code == 0 and "2 unchanged" in again.output
