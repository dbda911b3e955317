"""The admin API: FastAPI app (REST under /api/v1, SSE, health, metrics), auth, and the server runner.

`create_app(settings, store=..., engine=...)` builds the app; `run_server(settings, ...)` runs the whole service.
The web admin (`api.web`) plugs into the same app when present.
"""

from .app import create_app
from .auth import clear_session_cookies, current_user, issue_session_cookies
from .server import RunningServer, run_server

__all__ = [
    "RunningServer",
    "clear_session_cookies",
    "create_app",
    "current_user",
    "issue_session_cookies",
    "run_server",
]
