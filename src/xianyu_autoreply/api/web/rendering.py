"""Templates, language and security headers of the web admin's pages.

Jinja's autoescape is on for every template (a buyer can type `<script>`), the page language is chosen once per
request, and every answer of the admin's routes carries the headers that keep it out of frames and stop inline
script: htmx and its SSE extension are configured not to need any.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from ..schemas import storable_text_problem
from .i18n import DEFAULT_LANG, LANG_COOKIE, normalize_lang, reason_text, translator

TEMPLATES_DIR = Path(__file__).parent / "templates"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
# htmx without inline styles or eval (CSP), and a 422 (a form's error message) swapped in like a success.
HTMX_CONFIG: Mapping[str, Any] = {
    "includeIndicatorStyles": False,
    "allowEval": False,
    "allowScriptTags": False,
    "selfRequestsOnly": True,
    "responseHandling": [
        {"code": "204", "swap": False},
        {"code": "[23]..", "swap": True},
        {"code": "422", "swap": True, "error": False},
        {"code": "[45]..", "swap": False, "error": True},
    ],
}

_env = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals["reason_text"] = reason_text
templates = Jinja2Templates(env=_env)


def add_security_headers(response: Response) -> Response:
    """CSP without inline script, no framing, no sniffing, no cross-site referrer, no caching."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class UnstorableForm(Exception):
    """A form field holds text no database keeps faithfully (see `storable_text_problem`)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def check_form(request: Request) -> None:
    """Refuse a form the API's schemas would refuse (NUL, lone surrogates), before any handler writes anything.

    The parsed form is cached on the request, so the handler's own `request.form()` reads the same values.
    """
    if request.method not in ("POST", "PUT", "PATCH") or not request.headers.get("content-type", "").startswith(
        _FORM_TYPES
    ):
        return
    form = await request.form()
    for name, value in form.multi_items():
        if (problem := storable_text_problem(name)) is not None:
            raise UnstorableForm("a field name", problem)
        if isinstance(value, str) and (problem := storable_text_problem(value)) is not None:
            raise UnstorableForm(name[:64], problem)


def _unstorable_answer(request: Request, exc: UnstorableForm) -> Response:
    """422 with the reason: a toast for htmx (the form stays as typed, to be corrected), else an error page."""
    message = translator(request_lang(request))("err.invalid", error=str(exc))
    if request.headers.get("HX-Request"):
        headers = {"HX-Retarget": "#toast", "HX-Reswap": "innerHTML"}
        return render(request, "_flash.html", {"message": message, "error": True}, status_code=422, headers=headers)
    return render(request, "error.html", {"status": 422, "message": message}, status_code=422)


class WebRoute(APIRoute):
    """A route of the admin: whatever it answers (page, fragment, redirect, error) gets the security headers; a
    form with unstorable text is answered 422 before its handler runs (`check_form`, called after sign-in)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            try:
                response = await handler(request)
            except UnstorableForm as exc:
                response = _unstorable_answer(request, exc)
            return add_security_headers(response)

        return with_headers


def request_lang(request: Request) -> str:
    """`?lang=` first (the switch link), then the cookie, then Chinese."""
    return (
        normalize_lang(request.query_params.get("lang"))
        or normalize_lang(request.cookies.get(LANG_COOKIE))
        or DEFAULT_LANG
    )


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render a page or fragment in the request's language; remembers a `?lang=` choice in a cookie."""
    lang = request_lang(request)
    values: dict[str, Any] = {
        "request": request,
        "lang": lang,
        "t": translator(lang),
        "user": getattr(request.state, "user", None),
        "csrf": request.cookies.get("xar_csrf", ""),
        "htmx_config": HTMX_CONFIG,
    }
    values.update(context or {})
    response = templates.TemplateResponse(request, name, values, status_code=status_code, headers=dict(headers or {}))
    chosen = normalize_lang(request.query_params.get("lang"))
    if chosen is not None and chosen != normalize_lang(request.cookies.get(LANG_COOKIE)):
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 86400, samesite="lax", path="/")
    return response


def fragment(request: Request, name: str, context: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    """A template rendered to text (for server-sent events), in the request's language."""
    lang = request_lang(request)
    values: dict[str, Any] = {
        "request": request,
        "lang": lang,
        "t": translator(lang),
        "user": getattr(request.state, "user", None),
        "csrf": request.cookies.get("xar_csrf", ""),
    }
    values.update(context or {})
    values.update(kwargs)
    return _env.get_template(name).render(values)


def render_template(name: str, **values: Any) -> str:
    """A template rendered to text with exactly these values (autoescaped like every page)."""
    return _env.get_template(name).render(values)


def since_text(since_ms: int, *, now: datetime | None = None) -> tuple[str, str]:
    """(short local time, ISO) of a millisecond timestamp, for the "since" column."""
    at = datetime.fromtimestamp(since_ms / 1000, tz=UTC).astimezone()
    now = now or datetime.now().astimezone()
    short = at.strftime("%H:%M:%S") if at.date() == now.date() else at.strftime("%m-%d %H:%M")
    return short, at.isoformat(timespec="seconds")
