"""Every error the API answers with is JSON `{"code": stable_code, "message": human}` (422s also name the field).

    ApiError                        raised by routes and auth; carries status, code, message (and field)
    store / protocol errors         mapped once here, so a route never builds an error answer by hand:
        AccountNotFound, NotFound   404 account_not_found / not_found
        LastAdmin                   409 last_admin
        VersionConflict, Conflict   409 version_conflict / conflict
        InvalidCookie               422 invalid_cookie (field: cookie)
        RuleError, TemplateError    422 invalid_rule / invalid_template
        InvalidValue, ValueError    422 invalid_value
    ApiError(422, url_not_allowed)  an owner's URL the outbound policy refuses (field: the URL's field)
        DatabaseError               503 database_unavailable
    anything else                   500 internal_error (logged with its type, never echoed)

Codes are part of the API contract: scripts branch on them, people read the message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..protocol import InvalidCookie, ProtocolError
from ..replies import RuleError, TemplateError
from ..store import (
    AccountNotFound,
    Conflict,
    DatabaseError,
    InvalidValue,
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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


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


# Store and protocol errors that answer with a fixed code and status; the message is fixed where the exception's
# own text could reveal something (a missing account must look like someone else's), else the exception's text.
_PLAIN: dict[type[Exception], tuple[str, int, str | None]] = {
    AccountNotFound: ("account_not_found", 404, "no such account"),
    UserNotFound: ("user_not_found", 404, "no such user"),
    NotFound: ("not_found", 404, None),
    LastAdmin: ("last_admin", 409, None),
    VersionConflict: ("version_conflict", 409, None),
    Conflict: ("conflict", 409, None),
    ProtocolError: ("invalid_value", 422, None),
    InvalidValue: ("invalid_value", 422, None),
}


def _plain(code: str, status: int, fixed: str | None) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(code, fixed if fixed is not None else str(exc)), status)

    return handler


def install_error_handlers(app: FastAPI) -> None:
    """Make every error, the framework's 404/405/422 included, answer in the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, field=exc.field), exc.status, headers=exc.headers)

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

    for kind, (code, status, fixed) in _PLAIN.items():
        app.add_exception_handler(kind, _plain(code, status, fixed))

    @app.exception_handler(InvalidCookie)
    async def _bad_cookie(request: Request, exc: InvalidCookie) -> JSONResponse:
        # The protocol's messages describe the problem, never the cookie's value.
        return JSONResponse(error_body("invalid_cookie", str(exc), field="cookie"), 422)

    @app.exception_handler(RuleError)
    async def _bad_rule(request: Request, exc: RuleError) -> JSONResponse:
        return JSONResponse(error_body("invalid_rule", str(exc), field="rules", rule_id=exc.rule_id), 422)

    @app.exception_handler(TemplateError)
    async def _bad_template(request: Request, exc: TemplateError) -> JSONResponse:
        return JSONResponse(error_body("invalid_template", str(exc), field=_template_field(request.url.path)), 422)

    @app.exception_handler(DatabaseError)
    async def _database(request: Request, exc: DatabaseError) -> JSONResponse:
        log.error("database error", path=request.url.path, error=type(exc.__cause__ or exc).__name__)
        return JSONResponse(error_body("database_unavailable", "the database is not reachable; try again"), 503)

    @app.exception_handler(SecretError)
    async def _secret(request: Request, exc: SecretError) -> JSONResponse:
        return JSONResponse(error_body("secret_unreadable", str(exc)), 500)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error=type(exc).__name__)
        return JSONResponse(error_body("internal_error", "an unexpected error occurred"), 500)
