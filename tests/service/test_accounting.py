"""Query accounting end to end: real uvicorn workers sharing a real redis-server.

Exact counts under 50 concurrent callers on two worker processes, budgets exact across
workers, a Redis outage under load (503s, never a 500, recovery without restart), fail-open.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.servers import RedisProcess, ServiceProcess, free_port, wait_for

ADMIN = "admin-token-for-tests"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
CALLERS = 50
REQUESTS = 40  # 2,000 requests in all: enough interleaving to catch a lost or doubled charge


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def api_key(i: int) -> str:
    return f"caller-key-{i:02d}"


# a new connection per request: no keep-alive race with the server's idle timeout on a loaded
# machine, and the kernel spreads the requests over both workers
NO_KEEPALIVE = httpx.Limits(max_connections=CALLERS, max_keepalive_connections=0)

IMAGES = {
    n: np.random.default_rng(n).random((n, 1, 28, 28), dtype=np.float32).tobytes()
    for n in range(1, 9)
}


async def predict(client: httpx.AsyncClient, key: str | None, n: int) -> httpx.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if key is not None:
        headers["X-API-Key"] = key
    return await client.post(
        f"/predict?output=label&shape={n},1,28,28", content=IMAGES[n], headers=headers
    )


def usage_total(server: ServiceProcess, caller: str) -> int:
    response = httpx.get(f"{server.url}/usage/{caller}", headers=ADMIN_HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == sum(body["models"].values())
    return int(body["total"])


@pytest.fixture(scope="module")
def two_workers(redis_server: RedisProcess) -> Iterator[ServiceProcess]:
    settings = {
        "redis_url": f"redis://127.0.0.1:{redis_server.port}/3",
        "api_keys": {sha256(api_key(i)): f"c{i:02d}" for i in range(CALLERS)},
        "admin_token_sha256": sha256(ADMIN),
        "redis_timeout_s": 5,  # exactness, not outage latency, is under test here
    }
    with ServiceProcess(settings, workers=2) as server:
        yield server


def test_counts_are_exact_under_concurrency_on_two_workers(two_workers: ServiceProcess) -> None:
    """50 callers x 40 requests of 1..8 images each, all at once: every caller's count in
    Redis equals the images it was answered, exactly."""

    async def caller(client: httpx.AsyncClient, i: int) -> int:
        rng = random.Random(i)
        answered = 0
        for _ in range(REQUESTS):
            n = rng.randint(1, 8)
            response = await predict(client, api_key(i), n)
            assert response.status_code == 200, response.text
            assert len(response.json()["labels"]) == n
            answered += n
        return answered

    async def body() -> list[int]:
        async with httpx.AsyncClient(
            base_url=two_workers.url, limits=NO_KEEPALIVE, timeout=60
        ) as client:
            return await asyncio.gather(*(caller(client, i) for i in range(CALLERS)))

    answered = asyncio.run(body())
    for i, images in enumerate(answered):
        assert usage_total(two_workers, f"key:c{i:02d}") == images
    listed = httpx.get(f"{two_workers.url}/usage", headers=ADMIN_HEADERS).json()["callers"]
    assert {c["caller"]: c["total"] for c in listed} == {
        f"key:c{i:02d}": images for i, images in enumerate(answered)
    }


def test_budget_is_exact_across_workers(two_workers: ServiceProcess) -> None:
    """A budget set through the admin API holds across both workers: of 80 concurrent
    single-image requests against a budget of 37 images, exactly 37 are answered."""
    caller, key = "key:c49", api_key(49)
    httpx.delete(f"{two_workers.url}/usage/{caller}", headers=ADMIN_HEADERS).raise_for_status()
    httpx.put(
        f"{two_workers.url}/usage/{caller}/budget", json={"budget": 37}, headers=ADMIN_HEADERS
    ).raise_for_status()

    async def body() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=two_workers.url, limits=NO_KEEPALIVE, timeout=60
        ) as client:
            return await asyncio.gather(*(predict(client, key, 1) for _ in range(80)))

    statuses = Counter(r.status_code for r in asyncio.run(body()))
    assert statuses == {200: 37, 429: 43}
    assert usage_total(two_workers, caller) == 37


async def load(
    url: str, key: str | None, stop: asyncio.Event, workers: int = 6
) -> list[tuple[int, int]]:
    """(status, images) of every request sent until ``stop`` is set."""
    results: list[tuple[int, int]] = []

    async def worker(client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            n = rng.randint(1, 4)
            response = await predict(client, key, n)
            results.append((response.status_code, n))
            if response.status_code == 503:
                assert response.headers["Retry-After"]
                assert response.json()["error"]["code"] == "counter_unavailable"
                await asyncio.sleep(0.01)

    async with httpx.AsyncClient(base_url=url, limits=NO_KEEPALIVE, timeout=30) as client:
        await asyncio.gather(*(worker(client, s) for s in range(workers)))
    return results


def answered(results: list[tuple[int, int]]) -> int:
    return sum(n for status, n in results if status == 200)


def test_redis_outage_under_load_fails_closed_and_recovers() -> None:
    """Redis stopped under load: only 200s and 503s, the server stays up, /readyz is false.
    Redis started again on the same port: 200s again, without restarting the service, and
    what was answered since then is counted exactly (the restarted Redis starts empty: the
    test Redis runs without persistence)."""
    redis = RedisProcess().start()
    key = "outage-key"
    settings = {
        "redis_url": redis.url,
        "api_keys": {sha256(key): "outage"},
        "admin_token_sha256": sha256(ADMIN),
    }
    restarted: RedisProcess | None = None
    try:
        with ServiceProcess(settings) as server:

            async def phase(action: object = None, seconds: float = 1.5) -> list[tuple[int, int]]:
                stop = asyncio.Event()
                task = asyncio.create_task(load(server.url, key, stop))
                await asyncio.sleep(seconds / 2)
                if callable(action):
                    await asyncio.to_thread(action)
                await asyncio.sleep(seconds / 2)
                stop.set()
                return await task

            before = asyncio.run(phase())
            assert {s for s, _ in before} == {200}
            assert usage_total(server, "key:outage") == answered(before)

            during = asyncio.run(phase(redis.stop))
            statuses = Counter(s for s, _ in during)
            assert set(statuses) <= {200, 503} and statuses[503] > 0, statuses
            ready = httpx.get(server.url + "/readyz")
            assert ready.status_code == 503 and ready.json()["counter"] is False
            assert ready.headers["Retry-After"]
            assert httpx.get(server.url + "/healthz").status_code == 200
            admin = httpx.get(server.url + "/usage", headers=ADMIN_HEADERS)
            assert admin.status_code == 503 and admin.headers["Retry-After"]

            restarted = RedisProcess(port=redis.port).start()
            wait_for(
                lambda: httpx.get(server.url + "/readyz").status_code == 200,
                10,
                "readiness after the Redis restart",
            )
            after = asyncio.run(phase())
            assert {s for s, _ in after} == {200}
            assert usage_total(server, "key:outage") == answered(after)
            assert server.proc is not None and server.proc.poll() is None
            assert "Traceback" not in server.log()
    finally:
        redis.__exit__(None, None, None)
        if restarted is not None:
            restarted.__exit__(None, None, None)


def test_fail_open_answers_while_redis_is_down() -> None:
    settings = {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "fail_open": True}
    with ServiceProcess(settings) as server:

        async def body() -> httpx.Response:
            async with httpx.AsyncClient(base_url=server.url, limits=NO_KEEPALIVE) as client:
                return await predict(client, None, 3)

        response = asyncio.run(body())
        assert response.status_code == 200, response.text
        assert "X-Queries-Used" not in response.headers
        ready = httpx.get(server.url + "/readyz").json()
        assert ready == {"ready": True, "models": True, "counter": False}
        metrics = httpx.get(server.url + "/metrics").text
        assert 'snd_queries_uncounted_total{model="resnet20-mnist"} 3.0' in metrics
