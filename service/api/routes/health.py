"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.accounting import CounterUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: models loaded and the query counter reachable",
    responses={503: {"description": "not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return JSONResponse({"ready": False, "models": False, "counter": False}, status_code=503)
    try:
        counter_ok = await runtime.counter.ping()
    except CounterUnavailable:
        counter_ok = False
    # fail-open servers answer (uncounted) without the counter, so they stay ready
    ready = counter_ok or runtime.settings.fail_open
    return JSONResponse(
        {"ready": ready, "models": True, "counter": counter_ok},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(runtime.settings.retry_after_s)},
    )
