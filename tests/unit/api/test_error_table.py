"""The API's one error table: each layer's typed error answers with its status and stable code."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from xianyu_autoreply.api.control import CommandControl, LocalControl, control_for
from xianyu_autoreply.api.errors import ERRORS, ApiError, answer_for, install_error_handlers
from xianyu_autoreply.engine.cluster import CommandKind, send_command
from xianyu_autoreply.engine.errors import NoEngine, NotConnected
from xianyu_autoreply.protocol import InputError, InvalidCookie, MalformedFrame
from xianyu_autoreply.replies import RuleError, TemplateError
from xianyu_autoreply.store import AccountNotFound, DatabaseError, InvalidValue, VersionConflict

RAISED: dict[str, Exception] = {
    "account": AccountNotFound("a1"),
    "version": VersionConflict("a1", expected=1, actual=2),
    "connected": NotConnected("a1"),
    "cookie": InvalidCookie("no unb in the cookie"),
    "rule": RuleError("r1", "the keyword is empty"),
    "template": TemplateError("unknown variable {buyer}"),
    "frame": MalformedFrame("not an object"),
    "value": InvalidValue("id too long"),
    "input": InputError("some other layer's bad input"),
    "engine": NoEngine(),
    "database": DatabaseError("gone"),
    "api": ApiError(418, "teapot", "short and stout", field="spout"),
    "bug": RuntimeError("secret detail"),
    "plain_value": ValueError("a bare ValueError is not ours"),
}


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.put("/raise/{name}/settings")
    async def _raise(name: str) -> None:
        raise RAISED[name]

    return app


async def _answer(name: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.put(f"/raise/{name}/settings")


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("account", 404, {"code": "account_not_found", "message": "no such account"}),
        ("version", 409, {"code": "version_conflict"}),
        ("connected", 409, {"code": "account_not_connected"}),
        ("cookie", 422, {"code": "invalid_cookie", "field": "cookie"}),
        ("rule", 422, {"code": "invalid_rule", "field": "rules", "rule_id": "r1"}),
        ("template", 422, {"code": "invalid_template", "field": "default_reply"}),
        ("frame", 422, {"code": "invalid_value", "message": "not an object"}),
        ("value", 422, {"code": "invalid_value"}),
        ("input", 422, {"code": "invalid_value"}),
        ("engine", 503, {"code": "engine_disabled"}),
        ("database", 503, {"code": "database_unavailable", "message": "the database is not reachable; try again"}),
        ("api", 418, {"code": "teapot", "message": "short and stout", "field": "spout"}),
        ("bug", 500, {"code": "internal_error", "message": "an unexpected error occurred"}),
        ("plain_value", 500, {"code": "internal_error"}),
    ],
)
async def test_each_error_type_answers_with_its_row(name: str, status: int, body: dict[str, str]) -> None:
    response = await _answer(name)
    assert response.status_code == status
    assert body.items() <= response.json().items()


def test_every_layers_input_error_shares_the_root() -> None:
    for exc in (InvalidCookie("x"), MalformedFrame("x"), RuleError("r", "x"), TemplateError("x"), InvalidValue("x")):
        assert isinstance(exc, InputError) and isinstance(exc, ValueError)
    assert not isinstance(AccountNotFound("a"), InputError)  # well-formed input, the stored state says no


def test_the_most_specific_row_wins() -> None:
    assert answer_for(InvalidValue("x")) is ERRORS[InputError]
    assert answer_for(RuleError("r", "x")) is ERRORS[RuleError]
    assert answer_for(KeyError("x")) is None


class _NoStore:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the store was used: {name}")


def test_the_control_is_picked_by_whether_an_engine_runs() -> None:
    assert isinstance(control_for(_NoStore(), None), CommandControl)  # type: ignore[arg-type]  # a fake store
    assert isinstance(control_for(_NoStore(), object()), LocalControl)  # type: ignore[arg-type]  # fakes


async def test_without_engine_live_session_operations_say_so_before_touching_anything() -> None:
    control = CommandControl(_NoStore())  # type: ignore[arg-type]  # must not be used
    with pytest.raises(NoEngine):
        await control.try_reply("a1", "hi", item_id=None)
    with pytest.raises(NoEngine):
        await control.send_manual("a1", "c1", "hi", to_user=None)


async def test_only_known_command_kinds_are_queued() -> None:
    assert {k.value for k in CommandKind} == {"add", "update_cookie", "set_enabled", "reload"}
    with pytest.raises(ValueError, match="unknown command kind 'set_rules'"):
        await send_command(_NoStore(), "a1", "set_rules")  # type: ignore[arg-type]  # refused before the store
