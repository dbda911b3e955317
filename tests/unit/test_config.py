from pathlib import Path

import pytest

from xianyu_autoreply.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("XAR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_follow_the_design_contract() -> None:
    s = load_settings()
    assert s.host == "127.0.0.1" and s.port == 8080
    assert s.platform.ws_url == "wss://wss-goofish.dingtalk.com/"
    assert s.platform.mtop_url == "https://h5api.m.goofish.com/h5/"
    assert s.session.heartbeat_interval == 15 and s.session.heartbeat_timeout == 30
    assert s.session.token_refresh_interval == 3600 and s.session.message_expire == 300
    assert s.session.max_concurrent_messages == 100
    assert s.database_url == f"sqlite+aiosqlite:///{Path('data') / 'xianyu.db'}"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_SESSION__HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("XAR_SESSION__HEARTBEAT_TIMEOUT", "3")
    monkeypatch.setenv("XAR_PLATFORM__WS_URL", "ws://127.0.0.1:9999/")
    monkeypatch.setenv("XAR_DATA_DIR", "/tmp/xar-data")
    s = load_settings()
    assert s.session.heartbeat_interval == 1 and s.session.heartbeat_timeout == 3
    assert s.platform.ws_url == "ws://127.0.0.1:9999/"
    assert s.database_url == "sqlite+aiosqlite:////tmp/xar-data/xianyu.db"


def test_toml_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toml = tmp_path / "xar.toml"
    toml.write_text("port = 9000\n[session]\nheartbeat_interval = 2\nmessage_expire = 60\n")
    monkeypatch.setenv("XAR_CONFIG", str(toml))
    monkeypatch.setenv("XAR_SESSION__MESSAGE_EXPIRE", "7")
    s = load_settings()
    assert s.port == 9000
    assert s.session.heartbeat_interval == 2
    assert s.session.message_expire == 7


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("XAR_PORT=8181\n")
    assert load_settings().port == 8181


def test_bad_value_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_SESSION__HEARTBEAT_INTERVAL", "-1")
    monkeypatch.setenv("XAR_PORT", "eighty")
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "XAR_SESSION__HEARTBEAT_INTERVAL" in text and "'-1'" in text
    assert "XAR_PORT" in text and "'eighty'" in text


def test_bad_url_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_PLATFORM__WS_URL", "http://example/")
    with pytest.raises(ConfigError, match="XAR_PLATFORM"):
        load_settings()


def test_missing_toml_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_CONFIG", "/nonexistent/xar.toml")
    with pytest.raises(ConfigError, match="XAR_CONFIG"):
        load_settings()


def test_secret_values_are_not_shown_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_ADMIN_PASSWORD", "hunter2-secret")
    s = load_settings()
    assert "hunter2-secret" not in repr(s)
    assert s.admin_password is not None and s.admin_password.get_secret_value() == "hunter2-secret"
