"""``GET /metrics``: Prometheus exposition (per worker process; see ``service.metrics``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from service.metrics import render

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this worker process",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics() -> Response:
    return render()
