"""Prometheus metrics: answered queries, request latency, refusals by error code.

Metrics live in the process that serves the request: with several uvicorn workers each worker
has its own values and ``GET /metrics`` shows the worker that answered it. To aggregate across
workers, start the server with ``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory
(``prometheus_client`` multiprocess mode); ``/metrics`` then reports the sum over workers.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError

QUERIES_ANSWERED = Counter(
    "snd_queries_answered",
    "Images answered by /predict (one query each)",
    ["model", "defense"],
)
QUERIES_UNCOUNTED = Counter(
    "snd_queries_uncounted",
    "Images answered while the query counter was unavailable (fail-open only)",
    ["model"],
)
DETECTIONS = Counter(
    "snd_detections",
    "Queries flagged by stateful detection, by layer and the model's action",
    ["model", "layer", "action"],
)
REFUSALS = Counter(
    "snd_refusals",
    "Requests refused, by error code",
    ["reason"],
)
FORWARD_BATCH = Histogram(
    "snd_forward_batch_images",
    "Images per defended forward pass (merged requests under dynamic batching)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
ACCOUNTING_CHARGES_PER_CALL = Histogram(
    "snd_accounting_charges_per_call",
    "Charges applied by one Redis script call (requests that arrived together share a call)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REQUEST_LATENCY = Histogram(
    "snd_request_duration_seconds",
    "HTTP request latency, by route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def render() -> Response:
    """The exposition of this process (or of all workers in multiprocess mode)."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Times every HTTP request; labels it with the matched route template (never the raw
    path, so unknown URLs cannot blow up the label set)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_LATENCY.labels(scope.get("method", ""), template, str(status)).observe(
                time.perf_counter() - start
            )


def _error_code(exc: Exception, response: Any) -> str:
    if isinstance(exc, ApiError):
        return exc.code
    try:
        body = json.loads(response.body)
        error = body["error"]  # /predict: {"error": {"code", ...}}; /v2: {"error", "code"}
        return str(error["code"] if isinstance(error, dict) else body["code"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return "unknown"


def _counting(handler: Callable[..., Any]) -> Callable[..., Any]:
    async def counted(request: Request, exc: Exception) -> Any:
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        REFUSALS.labels(_error_code(exc, response)).inc()
        return response

    return counted


def install_metrics(app: FastAPI) -> None:
    """Add the latency middleware and count every error response by its code. Call after
    the error handlers are installed."""
    app.add_middleware(MetricsMiddleware)
    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _counting(handler)
