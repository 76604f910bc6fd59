"""The gateway's API pages, offline: Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

FastAPI's own pages load their scripts, styles and icon from public CDNs (``cdn.jsdelivr.net``,
``fastapi.tiangolo.com``), so on a network without internet, where model servers usually run,
they are blank. Here the assets come from the ``fastapi-offline`` package (MIT; Swagger UI 5 and
ReDoc 2, the versions FastAPI's defaults name), read once and served under ``/docs/assets/``:
a fixed set of routes, none of which takes a path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

ASSET_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSET_PREFIX = "/docs/assets"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
TITLE = "SND gateway"

router = APIRouter(include_in_schema=False)


@cache
def asset_bytes(name: str) -> bytes:
    return (ASSET_DIR / name).read_bytes()


def asset_route(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(
            asset_bytes(name),
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return asset


for _name, _media_type in ASSETS.items():
    router.add_api_route(
        f"{ASSET_PREFIX}/{_name}", asset_route(_name, _media_type), methods=["GET", "HEAD"]
    )


def _root(request: Request) -> str:
    """The path prefix the gateway is served under (``--root-path`` behind a proxy)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.api_route("/docs", methods=["GET", "HEAD"])
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{TITLE} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{ASSET_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSET_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSET_PREFIX}/favicon.png",
    )


@router.api_route(OAUTH2_REDIRECT_URL, methods=["GET", "HEAD"])
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.api_route("/redoc", methods=["GET", "HEAD"])
async def redoc(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{TITLE} - ReDoc",
        redoc_js_url=f"{root}{ASSET_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSET_PREFIX}/favicon.png",
        with_google_fonts=False,
    )
