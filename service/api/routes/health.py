"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.accounting import CounterUnavailable
from service.api.deps import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def readiness(runtime: Runtime) -> tuple[bool, bool, bool]:
    """``(ready, models, counter)``: every model answers (a proxied model's upstream says it
    is ready: without it each request would be a 503) and the counter is reachable; a
    fail-open server answers (uncounted) without the counter, so it stays ready."""
    try:
        counter_ok = await runtime.counter.ping()
    except CounterUnavailable:
        counter_ok = False
    pool = runtime.pool
    states = await asyncio.gather(*(pool.ready(host) for host in pool.hosts.values()))
    models_ok = all(states)
    return models_ok and (counter_ok or runtime.settings.fail_open), models_ok, counter_ok


@router.get(
    "/readyz",
    summary="Readiness: every model answers (proxied: its upstream is ready) and the query "
    "counter is reachable",
    responses={503: {"description": "not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        return JSONResponse({"ready": False, "models": False, "counter": False}, status_code=503)
    ready, models_ok, counter_ok = await readiness(runtime)
    return JSONResponse(
        {"ready": ready, "models": models_ok, "counter": counter_ok},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": str(runtime.settings.retry_after_s)},
    )
