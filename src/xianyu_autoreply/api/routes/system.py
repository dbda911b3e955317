"""`/healthz` (the process answers), `/readyz` (database reachable, schema at head, engine running), `/metrics`."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ...store import Store, is_at_head
from ..metrics import Metrics, render

router = APIRouter(tags=["system"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and migrated, engine running (unless disabled)")
async def readyz(request: Request) -> JSONResponse:
    store: Store = request.app.state.store
    engine = request.app.state.engine
    checks: dict[str, str] = {}
    try:
        await store.db.ping(timeout=5.0)
        checks["database"] = "ok"
        checks["migrations"] = "head" if await asyncio.wait_for(is_at_head(store.db), 5.0) else "behind"
    except Exception as exc:  # any failure means "not ready"; the reason is the error's type, never its text
        checks["database"] = f"unreachable ({type(exc).__name__})"
    if engine is None:
        checks["engine"] = "disabled"
    else:
        checks["engine"] = "running" if engine.running else "stopped"
    ready = checks.get("database") == "ok" and checks.get("migrations") == "head" and checks["engine"] != "stopped"
    if ready:
        return JSONResponse({"status": "ready", **checks})
    return JSONResponse({"code": "not_ready", "message": "the service is not ready", **checks}, status_code=503)


@router.get("/metrics", summary="Prometheus text exposition")
async def metrics(request: Request) -> Response:
    app_metrics: Metrics = request.app.state.metrics
    store: Store = request.app.state.store
    started = time.perf_counter()
    try:
        await store.db.ping(timeout=5.0)
        app_metrics.engine.db_ping_seconds = time.perf_counter() - started
    except Exception:  # an unreachable database shows as a missing gauge; /readyz says why
        app_metrics.engine.db_ping_seconds = None
    return Response(render(app_metrics.registry), media_type="text/plain; version=0.0.4; charset=utf-8")
