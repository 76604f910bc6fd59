"""Dynamic batching: shared passes, whole requests, independent noise, same answers and counts."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from service.model_settings import ModelSettings
from service.offline.datasets import mnist_subset
from service.serving.batcher import DynamicBatcher, Overloaded
from service.serving.local import LocalHost
from tests.servers import ServiceProcess


class RecordingForward:
    """forward(x) = per-image pixel means, recording each pass's size (slowed to force queuing)."""

    def __init__(self, delay: float = 0.01) -> None:
        self.sizes: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(x))
        threading.Event().wait(self.delay)
        return x.reshape(len(x), -1).mean(1, keepdims=True)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_requests_share_passes_and_get_their_own_answers() -> None:
    forward = RecordingForward()

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(forward, ThreadPoolExecutor(1), max_images=64, max_wait_s=0.005)
        inputs = [np.full((1 + i % 3, 1, 4, 4), i, np.float32) for i in range(32)]
        outputs = await asyncio.gather(*(batcher.submit(x) for x in inputs))
        await batcher.close()
        return [(x, y) for x, y in zip(inputs, outputs, strict=True)]  # type: ignore[misc]

    pairs = run(scenario())
    for x, y in pairs:
        assert y.shape == (len(x), 1)
        np.testing.assert_array_equal(y[:, 0], x.reshape(len(x), -1).mean(1))
    assert sum(forward.sizes) == sum(len(x) for x, _ in pairs)
    assert len(forward.sizes) < 32 / 2  # merged, not one pass per request
    assert max(forward.sizes) <= 64


def test_requests_are_never_split_across_passes() -> None:
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = DynamicBatcher(forward, ThreadPoolExecutor(1), max_images=10, max_wait_s=0.005)
        await asyncio.gather(
            *(batcher.submit(np.zeros((4, 1, 2, 2), np.float32)) for _ in range(9))
        )
        await batcher.close()

    run(scenario())
    assert all(size % 4 == 0 and size <= 10 for size in forward.sizes)
    assert sum(forward.sizes) == 36


def test_a_full_queue_refuses_new_work() -> None:
    forward = RecordingForward(delay=0.2)

    async def scenario() -> list[object]:
        batcher = DynamicBatcher(
            forward, ThreadPoolExecutor(1), max_images=4, max_wait_s=0, max_queue=8
        )
        tasks = [
            asyncio.create_task(batcher.submit(np.zeros((4, 1, 2, 2), np.float32)))
            for _ in range(4)
        ]
        results: list[object] = list(await asyncio.gather(*tasks, return_exceptions=True))
        await batcher.close()
        return results

    results = run(scenario())
    assert any(isinstance(r, Overloaded) for r in results)
    assert any(isinstance(r, np.ndarray) for r in results)


def test_merged_requests_get_independent_noise() -> None:
    host = LocalHost.load(
        ModelSettings(defense={"kind": "snd", "sigma": 0.05}), torch.device("cpu"), False
    )
    image = mnist_subset("test").images[:1]

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(host.forward, ThreadPoolExecutor(1), max_wait_s=0.01)
        out = await asyncio.gather(*(batcher.submit(image.copy()) for _ in range(8)))
        await batcher.close()
        return out

    outputs = run(scenario())
    assert len({tuple(o.ravel().round(10)) for o in outputs}) == 8


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("batching", [True, False])
def test_answers_and_counts_are_the_same_with_batching_on_and_off(batching: bool) -> None:
    keys = {f"caller{i}": f"key-{i}" for i in range(4)}
    settings = {
        "defense": "none",
        "batching": batching,
        "admin_token_sha256": sha("admin"),
        "api_keys": {sha(k): name for name, k in keys.items()},
    }
    images = mnist_subset("test").images[:32]
    reference = LocalHost.load(
        ModelSettings(defense={"kind": "none"}), torch.device("cpu"), False
    ).forward(images)

    async def call(client: httpx.AsyncClient, i: int) -> np.ndarray:
        buf = io.BytesIO()
        np.save(buf, images[i : i + 1])
        r = await client.post(
            "/predict",
            content=buf.getvalue(),
            params={"output": "scores"},
            headers={"Content-Type": "application/x-npy", "X-API-Key": f"key-{i % 4}"},
        )
        assert r.status_code == 200
        return np.array(r.json()["scores"], np.float32)

    with ServiceProcess(settings) as server:

        async def scenario() -> list[np.ndarray]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                return await asyncio.gather(*(call(client, i) for i in range(32)))

        answers = np.concatenate(run(scenario()))
        counts = [
            httpx.get(
                f"{server.url}/usage/key:caller{i}", headers={"Authorization": "Bearer admin"}
            ).json()["total"]
            for i in range(4)
        ]
    np.testing.assert_allclose(answers, reference, atol=1e-5)
    assert (answers.argmax(1) == reference.argmax(1)).all()
    assert counts == [8, 8, 8, 8]
