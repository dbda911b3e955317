"""JSON in and out for the simulator's HTTP endpoints (orjson, UTF-8 as is)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def error_response(message: str, *, status: int = 400) -> web.Response:
    """The control API's error shape: `{"error": "<what was wrong>"}`."""
    return json_response({"error": message}, status=status)
