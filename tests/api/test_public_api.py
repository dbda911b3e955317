"""The names other parts (the web admin, the demo, users' scripts) import from `xianyu_autoreply.api`: a rename
or a changed signature must be a deliberate act."""

from __future__ import annotations

import inspect

import xianyu_autoreply.api as api
from xianyu_autoreply.api import auth, server


def test_the_package_exports_exactly_these_names() -> None:
    assert sorted(api.__all__) == [
        "RunningServer",
        "clear_session_cookies",
        "create_app",
        "current_user",
        "issue_session_cookies",
        "run_server",
    ]


def test_run_server_keeps_its_signature() -> None:
    parameters = inspect.signature(server.run_server).parameters
    assert list(parameters)[:3] == ["settings", "engine_enabled", "on_ready"]
    assert parameters["settings"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in parameters.items() if name != "settings")
    assert parameters["engine_enabled"].default is True and parameters["on_ready"].default is None


def test_create_app_takes_the_store_and_engine_by_keyword() -> None:
    parameters = inspect.signature(api.create_app).parameters
    assert list(parameters) == ["settings", "store", "engine"]
    assert parameters["store"].kind is parameters["engine"].kind is inspect.Parameter.KEYWORD_ONLY


def test_auth_helpers_for_the_web_admin_are_there() -> None:
    for name in ("issue_session_cookies", "clear_session_cookies", "login", "optional_user", "hash_password"):
        assert name in auth.__all__
    assert list(inspect.signature(auth.issue_session_cookies).parameters) == ["response", "user", "request"]
