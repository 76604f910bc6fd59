"""One JSON error shape for every failure: ``{"error": {"code": ..., "message": ...}}``; on the
Open Inference Protocol's ``/v2`` paths the protocol's own ``{"error": "<message>"}`` with the same
stable ``code`` beside it: ``{"error": "<message>", "code": "<code>"}``. A fault has one code on
both protocols (the error table of the API page); the status follows each protocol's
convention. The handlers render :class:`service.errors.ApiError` and the framework's own errors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.errors import ApiError

log = logging.getLogger(__name__)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def is_oip(request: Request) -> bool:
    """A request to the Open Inference Protocol routes (``/v2``, ``/v2/...``)."""
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


def render(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The error in the shape of the path's protocol, with the same code on both."""
    if is_oip(request):
        return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)
    return error_response(status, code, message, headers)


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route answers on this path: Starlette's own ``Allow`` names only the
    first route that matched the path (``GET /usage/{caller}`` but not its ``DELETE``)."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return render(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return render(request, 422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return render(request, exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return render(request, 500, "internal_error", "internal server error")
