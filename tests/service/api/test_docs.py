"""The API pages work offline: ``/docs`` (Swagger UI) and ``/redoc`` reference only the
gateway's own URLs, and every asset they load is served by the gateway itself (FastAPI's
defaults load them from public CDNs, blank on a network without internet)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from service.app import create_app
from service.settings import Settings

LOCAL_REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url: '([^']+)'""")


def references(html: str) -> list[str]:
    return [a or b for a, b in LOCAL_REFERENCE.findall(html)]


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png", "openapi.json"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png", "openapi.json"}),
    ],
)
@pytest.mark.parametrize("root_path", ["", "/gateway"])
def test_the_api_pages_load_only_the_gateways_own_assets(
    page: str, expected: set[str], root_path: str
) -> None:
    app = create_app(Settings(device="cpu"))

    async def body() -> None:
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            html = (await http.get(page)).text
            assert not re.search(r"https?://", html), "the page names another host"
            urls = references(html)
            assert {url.rsplit("/", 1)[1] for url in urls} == expected
            for url in urls:
                assert url.startswith(f"{root_path}/"), url
                answer = await http.get(url.removeprefix(root_path))
                assert answer.status_code == 200, url
                assert len(answer.content) > 1000, url
            scripts = [u for u in urls if u.endswith(".js")]
            for url in scripts:  # real bundles, not an error page
                answer = await http.get(url.removeprefix(root_path))
                assert answer.headers["content-type"].startswith("text/javascript")
                assert len(answer.content) > 500_000

    asyncio.run(body())
