"""The web admin: server-rendered pages (Jinja2, autoescaped) with htmx and its SSE extension, Chinese first.

`router` is included by `api.app.create_app`, which also mounts `static/` at `/static`. Pages sign in with the
API's session cookie and change accounts through the same `AccountOperations` as the REST API.
"""

from .routes import router

__all__ = ["router"]
