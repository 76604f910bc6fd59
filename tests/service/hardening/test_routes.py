"""The app's routes are exactly the known set; none takes a URL or a path that loads a model or
reads a file (a model name is only ever a key of the served models); every admin route depends
on the admin check; a 405 names every method of the path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi.routing import APIRoute

from service.api.deps import require_admin
from service.app import create_app
from service.settings import Settings
from tests.service.hardening.conftest import (
    assert_json_error,
)

ROUTES = {
    ("POST", "/predict"),
    ("GET", "/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/usage"),
    ("GET", "/usage/me"),
    ("GET", "/usage/{caller}"),
    ("DELETE", "/usage/{caller}"),
    ("PUT", "/usage/{caller}/budget"),
    ("GET", "/detections"),
    ("GET", "/detections/{caller}"),
    ("POST", "/detections/{caller}/lift"),
    ("DELETE", "/detections/{caller}"),
    # the Open Inference Protocol (v2): metadata, health, readiness, infer
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{model}"),
    ("GET", "/v2/models/{model}/versions/{version}"),
    ("GET", "/v2/models/{model}/ready"),
    ("GET", "/v2/models/{model}/versions/{version}/ready"),
    ("POST", "/v2/models/{model}/infer"),
    ("POST", "/v2/models/{model}/versions/{version}/infer"),
    # the documentation routes: static HTML, the schema, and the pages' assets (offline)
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/docs"),
    ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("HEAD", "/redoc"),
    *(
        (method, f"/docs/assets/{name}")
        for method in ("GET", "HEAD")
        for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
    ),
}
# every parameter any route reads, by where it comes from
PARAMETERS = {
    ("query", "model"),
    ("query", "output"),
    ("query", "shape"),
    ("header", "x-shape"),
    ("header", "x-api-key"),
    ("header", "authorization"),
    ("path", "caller"),
    ("body", "update"),
    # /v2: the model is a key of the served models, the version only ever "1"
    ("path", "model"),
    ("path", "version"),
    ("header", "inference-header-content-length"),
    # GET /usage's page: its size and the cursor (a caller id)
    ("query", "limit"),
    ("query", "after"),
}
ADMIN_ROUTES = {
    ("GET", "/usage"),
    ("GET", "/usage/{caller}"),
    ("DELETE", "/usage/{caller}"),
    ("PUT", "/usage/{caller}/budget"),
    ("GET", "/detections"),
    ("GET", "/detections/{caller}"),
    ("POST", "/detections/{caller}/lift"),
    ("DELETE", "/detections/{caller}"),
}


def flat_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route, also those of included routers (FastAPI keeps them lazily wrapped)."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            yield from (context.original_route for context in route.effective_route_contexts())
        elif hasattr(route, "routes"):
            yield from flat_routes(route.routes)
        else:
            yield route


def parameters(dependant: Any) -> set[tuple[str, str]]:
    found = {
        (kind, p.alias.lower())
        for kind in ("query", "path", "header", "cookie", "body")
        for p in getattr(dependant, f"{kind}_params")
    }
    for sub in dependant.dependencies:
        found |= parameters(sub)
    return found


def dependency_calls(dependant: Any) -> set[Any]:
    calls = {dependant.call}
    for sub in dependant.dependencies:
        calls |= dependency_calls(sub)
    return calls


def test_the_routes_are_exactly_the_known_set() -> None:
    app = create_app(Settings())
    routes = list(flat_routes(app.routes))
    assert {
        (method, route.path)
        for route in routes
        for method in getattr(route, "methods", None) or {"(not http)"}
    } == ROUTES
    api_routes = [route for route in routes if isinstance(route, APIRoute)]
    found = set().union(*(parameters(route.dependant) for route in api_routes))
    # no route takes a URL, a file path, a weights or zoo name: a new parameter is reviewed here
    assert found == PARAMETERS
    assert not {name for _, name in found} & {
        "url",
        "path",
        "file",
        "weights",
        "zoo",
        "checkpoint",
        "filename",
    }
    for route in api_routes:
        admin = any(
            method for method in route.methods or () if (method, route.path) in ADMIN_ROUTES
        )
        assert (require_admin in dependency_calls(route.dependant)) == admin, route.path


def test_405_names_every_method_of_the_path() -> None:
    """Starlette alone would answer ``Allow: GET`` for a POST to /usage/{caller}."""
    app = create_app(Settings())

    async def ask(method: str, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path)

    for method, path, allow in (
        ("POST", "/usage/key:x", "DELETE, GET"),
        ("GET", "/predict", "POST"),
        ("PATCH", "/usage/key:x/budget", "PUT"),
    ):
        response = asyncio.run(ask(method, path))
        assert_json_error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == allow
    v2 = asyncio.run(ask("GET", "/v2/models/m/infer"))  # the protocol's own error shape
    assert v2.status_code == 405 and v2.headers["Allow"] == "POST"
    assert v2.json() == {"error": v2.json()["error"], "code": "method_not_allowed"}
    assert isinstance(v2.json()["error"], str)


# ---- label-only: no scores anywhere -----------------------------------------------------------
