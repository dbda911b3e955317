"""Every error the API answers with is JSON `{"code": stable_code, "message": human}` (422s also name the field).

`ApiError` (raised by routes and auth) carries its status, code, message and field. Every other domain error is
mapped by its type in `ERRORS`, one table, the most specific type winning (the exception's MRO is walked), so a
route never builds an error answer by hand:

    AccountNotFound, UserNotFound, NotFound     404 account_not_found / user_not_found / not_found
    LastAdmin, VersionConflict, Conflict        409 last_admin / version_conflict / conflict
    NotConnected (engine)                       409 account_not_connected
    InvalidCookie                               422 invalid_cookie (field: cookie)
    RuleError, TemplateError (replies)          422 invalid_rule / invalid_template
    InputError (any other: protocol, store)     422 invalid_value
    NoEngine (engine)                           503 engine_disabled
    DatabaseError                               503 database_unavailable (logged with the driver's error type)
    SecretError                                 500 secret_unreadable
    anything else                               500 internal_error (logged with its type, never echoed)

An owner's URL the outbound policy refuses is `ApiError(422, url_not_allowed)` naming the URL's field.
Codes are part of the API contract: scripts branch on them, people read the message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.errors import NoEngine, NotConnected
from ..protocol import InputError, InvalidCookie
from ..replies import RuleError, TemplateError
from ..store import (
    AccountNotFound,
    Conflict,
    DatabaseError,
    LastAdmin,
    NotFound,
    SecretError,
    UserNotFound,
    VersionConflict,
)

log = structlog.get_logger("xianyu_autoreply.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success; `code` is stable, `message` is for people, `field` for 422s."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra or {}


def not_found(what: str = "account") -> ApiError:
    """The same 404 whether the thing is missing or belongs to someone else: no existence leak."""
    return ApiError(404, f"{what}_not_found", f"no such {what}")


def error_body(code: str, message: str, *, field: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return body


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "ai", "model")` -> `ai.model`; path and query names stay as they are."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie", "form"}:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _template_field(path: str) -> str:
    """Which field of the request held the bad template (a 422 always names its field)."""
    for suffix, field in (("/rules", "reply"), ("/settings", "default_reply"), ("/delivery-rules", "content")):
        if path.endswith(suffix):
            return field
    return "template"


@dataclass(frozen=True, slots=True)
class Answer:
    """How one exception type answers. `message`: fixed where the exception's own text could reveal something (a
    missing account must look like someone else's), else the exception's text. `field`: the 422's field, fixed
    or from the request path. `extra`: more body keys from the exception. `logged`: the event an operator sees
    (with the type of the error's cause, never its text)."""

    status: int
    code: str
    message: str | None = None
    field: str | Callable[[str], str] | None = None
    extra: Callable[[Any], dict[str, Any]] | None = None
    logged: str | None = None


ERRORS: dict[type[Exception], Answer] = {
    AccountNotFound: Answer(404, "account_not_found", "no such account"),
    UserNotFound: Answer(404, "user_not_found", "no such user"),
    NotFound: Answer(404, "not_found"),
    LastAdmin: Answer(409, "last_admin"),
    VersionConflict: Answer(409, "version_conflict"),
    Conflict: Answer(409, "conflict"),
    NotConnected: Answer(409, "account_not_connected", "the account is not connected; start it or wait"),
    # The protocol's messages describe the problem, never the cookie's value.
    InvalidCookie: Answer(422, "invalid_cookie", field="cookie"),
    RuleError: Answer(422, "invalid_rule", field="rules", extra=lambda exc: {"rule_id": exc.rule_id}),
    TemplateError: Answer(422, "invalid_template", field=_template_field),
    InputError: Answer(422, "invalid_value"),
    NoEngine: Answer(503, "engine_disabled"),
    DatabaseError: Answer(
        503, "database_unavailable", "the database is not reachable; try again", logged="database error"
    ),
    SecretError: Answer(500, "secret_unreadable"),
}


def answer_for(exc: BaseException) -> Answer | None:
    """The table's row for the most specific of the exception's types (None: not a domain error)."""
    for kind in type(exc).__mro__:
        answer = ERRORS.get(kind)
        if answer is not None:
            return answer
    return None


def as_api_error(exc: Exception, *, path: str = "") -> ApiError | None:
    """The answer to `exc` as an `ApiError` (None for an unexpected error); `path` picks a template's field."""
    if isinstance(exc, ApiError):
        return exc
    answer = answer_for(exc)
    if answer is None:
        return None
    field = answer.field(path) if callable(answer.field) else answer.field
    message = answer.message if answer.message is not None else str(exc)
    extra = answer.extra(exc) if answer.extra is not None else None
    return ApiError(answer.status, answer.code, message, field=field, extra=extra)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, the framework's 404/405/422 included, answer in the one JSON shape."""

    async def _answer(request: Request, exc: Exception) -> JSONResponse:
        error = as_api_error(exc, path=request.url.path)
        if error is None:
            log.error("unhandled error", path=request.url.path, error=type(exc).__name__)
            return JSONResponse(error_body("internal_error", "an unexpected error occurred"), 500)
        answer = answer_for(exc)
        if answer is not None and answer.logged:
            log.error(answer.logged, path=request.url.path, error=type(exc.__cause__ or exc).__name__)
        body = error_body(error.code, error.message, field=error.field, **error.extra)
        return JSONResponse(body, error.status, headers=error.headers)

    # One handler for the whole table (Starlette picks a registered type by the exception's MRO; `_answer` then
    # finds the same row). `Exception` is the fallback Starlette gives to its server-error middleware.
    kinds: list[type[Exception]] = [ApiError, *ERRORS, Exception]
    for kind in kinds:
        app.add_exception_handler(kind, _answer)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": "body" if err.get("type") == "json_invalid" else _field_name(err.get("loc", ())),
                "message": str(err.get("msg", "invalid")),
            }
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "message": "invalid input"}
        message = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid input"
        return JSONResponse(error_body("invalid_input", message, field=first["field"], errors=errors), 422)
