"""Hardening tests reuse the running-service fixture of the API tests and the engine fixtures of the integration
tests, so that what is attacked here is exactly what runs in production."""

from __future__ import annotations

from ..api.conftest import api as api  # noqa: PLC0414 (re-exported module-scoped fixture)
