"""`create_app`: the FastAPI application over a store and (optionally) a running engine.

The app owns no lifecycle: whoever builds it (`run_server`, a test, the demo) opens the store, starts the engine,
and stops both afterwards. That keeps the app cheap to build and lets one engine serve several apps in tests.
Set `app.state.stopping` to end open event streams before the HTTP server shuts down.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..config import Settings
from ..engine.scheduler import AccountScheduler
from ..outbound import OutboundGuard, OutboundPolicy
from ..store import Store
from .auth import Authenticator, bind_authenticator, unbind_authenticator
from .errors import install_error_handlers
from .metrics import Metrics
from .operations import AccountOperations
from .routes import accounts, events, system, users

STATIC_DIR = Path(__file__).parent / "web" / "static"
WEB_MODULE = "xianyu_autoreply.api.web"


class _BindAuthenticator:
    """Makes the app's authenticator the current one while a request is handled (for `issue_session_cookies`)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = bind_authenticator(self.auth)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind_authenticator(token)


# On every answer, including errors raised before a route answers and static files: the web admin's pages add a
# CSP of their own (api/web/rendering.py), but a 401 of an htmx action or /static/admin.js used to go without any.
BASELINE_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"}


class _BaselineSecurityHeaders:
    """Adds BASELINE_HEADERS to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASELINE_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def _web_router() -> Any:
    """The web admin's router when `xianyu_autoreply.api.web` provides one (it is built separately)."""
    try:
        module = importlib.import_module(WEB_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != WEB_MODULE:
            raise
        return None
    return getattr(module, "router", None)


def create_app(settings: Settings, *, store: Store, engine: AccountScheduler | None) -> FastAPI:
    """The API (and the web admin, when installed) over `store` and `engine` (None: `serve --no-engine`)."""
    app = FastAPI(
        title="xianyu-autoreply",
        version=__version__,
        description="Keep many Xianyu seller accounts online and answer their buyers. Errors are "
        '`{"code", "message"}`; a 422 also names the `field`.',
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    auth = Authenticator(settings, store)
    app.state.settings = settings
    app.state.store = store
    app.state.engine = engine
    app.state.auth = auth
    outbound = engine.outbound if engine is not None else OutboundGuard(OutboundPolicy.from_settings(settings.outbound))
    app.state.ops = AccountOperations(store, engine, outbound=outbound)
    app.state.metrics = Metrics(engine)
    app.state.stopping = asyncio.Event()
    install_error_handlers(app)
    app.add_middleware(_BindAuthenticator, auth=auth)
    app.add_middleware(_BaselineSecurityHeaders)

    api = APIRouter(prefix="/api/v1")
    api.include_router(users.auth_router)
    api.include_router(accounts.router)
    api.include_router(users.users_router)
    api.include_router(users.notifications_router)
    api.include_router(events.router)
    app.include_router(api)
    app.include_router(system.router)

    web = _web_router()
    if web is not None:
        app.include_router(web)
    else:

        @app.get("/", include_in_schema=False)
        async def _root() -> RedirectResponse:
            return RedirectResponse("/docs")

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
