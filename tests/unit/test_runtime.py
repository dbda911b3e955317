"""The event loop the long-running commands run on (`XAR_EVENT_LOOP`): uvloop when installed, else the stdlib."""

from __future__ import annotations

import asyncio
import sys
import warnings

import pytest

from xianyu_autoreply import runtime
from xianyu_autoreply.config import ConfigError, load_settings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_choice_runs_on_the_standard_loop() -> None:
    assert runtime.run(_loop_module(), loop="asyncio").startswith("asyncio")
    assert runtime.loop_name("asyncio") == "asyncio"


def test_auto_and_uvloop_run_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert runtime.run(_loop_module(), loop="auto").startswith("uvloop")
    assert runtime.run(_loop_module(), loop="uvloop").startswith("uvloop")
    assert runtime.loop_name("auto") == "uvloop"


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert runtime.run(_loop_module(), loop="auto").startswith("asyncio")
    main = _loop_module()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine left unawaited would warn
        with pytest.raises(runtime.EventLoopUnavailable, match=r"pip install 'xianyu-autoreply\[speed\]'"):
            runtime.run(main, loop="uvloop")
    assert main.cr_frame is None  # closed, never started


def test_setting_is_read_from_the_environment_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAR_EVENT_LOOP", "asyncio")
    assert load_settings().event_loop == "asyncio"
    monkeypatch.setenv("XAR_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="XAR_EVENT_LOOP"):
        load_settings()
