"""Servers for the hardening tests: one keyed server on Redis with small limits (bad input,
size limits, fuzzing, leaks), and helpers shared by the modules here."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.servers import RedisProcess, ServiceProcess

ADMIN = "hardening-admin-token"
KEYS = {
    "matrix": "matrix-secret",
    "limits": "limits-secret",
    "fuzz": "fuzz-secret",
    "leaks": "leaks-secret",
    "disconnect": "disconnect-secret",
    "v2": "v2-secret",
}
MAX_BATCH = 8
MAX_BODY = 100_000
IMAGE = (1, 28, 28)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def good_request(server: ServiceProcess, key: str, n: int = 1) -> httpx.Response:
    """A valid raw float32 request of ``n`` grey images."""
    response = httpx.post(
        f"{server.url}/predict",
        params={"shape": f"{n},1,28,28", "output": "label"},
        content=np.full((n, *IMAGE), 0.5, np.float32).tobytes(),
        headers={"Content-Type": "application/octet-stream", "X-API-Key": key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def queries_used(server: ServiceProcess, caller: str) -> int:
    response = httpx.get(f"{server.url}/usage/{caller}", headers=admin(), timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    """The one error shape: ``{"error": {"code": str, "message": str}}`` and nothing else."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body


def start_all(*servers: ServiceProcess) -> None:
    """Start several servers at once (their start-up is mostly waiting on imports)."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(lambda server: server.start(), servers))


MODEL = "resnet20-mnist"
LABEL_ONLY = "mnist-label-only"


@pytest.fixture(scope="session")
def hardened(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    """resnet20-mnist behind SND, and the same network as a label-only model with σ hidden;
    API keys, an admin token, Redis, small batch and body limits, debug logging."""
    settings = {
        "log_level": "debug",
        "models": [
            {"name": MODEL},
            {"name": LABEL_ONLY, "zoo": MODEL, "label_only": True, "hide_defense_params": True},
        ],
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/10",
        "api_keys": {sha256(secret): name for name, secret in KEYS.items()},
        "admin_token_sha256": sha256(ADMIN),
        "max_batch": MAX_BATCH,
        "max_body_bytes": MAX_BODY,
    }
    with ServiceProcess(settings) as server:
        yield server
