"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.readiness import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: every model answers (proxied: its upstream is ready) and the query "
    "counter is reachable",
    responses={503: {"description": "not ready"}},
)
async def readyz(request: Request) -> JSONResponse:
    state = await readiness(request)
    body = {"ready": state.ready, "models": state.models, "counter": state.counter}
    return JSONResponse(body, status_code=state.status, headers=state.headers)
