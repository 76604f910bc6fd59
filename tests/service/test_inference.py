"""Model hosts: the traced graph and chunked passes answer exactly like the eager model."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from service.model_settings import ModelSettings
from service.offline.datasets import mnist_subset
from service.serving.local import LocalHost
from service.serving.pool import ModelPool
from service.settings import Settings

CPU = torch.device("cpu")


def load(
    defense: dict[str, object],
    zoo: str = "resnet20-mnist",
    *,
    graph: str = "eager",
    chunk_images: int = 0,
) -> LocalHost:
    settings = ModelSettings(zoo=zoo, defense=defense)  # type: ignore[arg-type]
    return LocalHost.load(settings, CPU, False, graph=graph, chunk_images=chunk_images)


def test_the_traced_graph_answers_like_the_eager_model() -> None:
    x = mnist_subset("test").images[:50]
    eager = load({"kind": "none"})
    traced = load({"kind": "none"}, graph="trace")
    assert eager.graph is None and traced.graph is not None
    np.testing.assert_allclose(traced.forward(x), eager.forward(x), atol=1e-5)
    for n in (1, 7):  # any batch size, not only the traced one
        np.testing.assert_allclose(traced.forward(x[:n]), eager.forward(x[:n]), atol=1e-5)


def test_networks_that_draw_noise_are_never_traced() -> None:
    """A frozen graph could fold a noise layer's draw into a constant: RSE and PNI stay eager,
    and their answers still vary from call to call."""
    x = mnist_subset("test").images[:4]
    for zoo in ("resnet20-mnist-rse", "resnet20-mnist-pni"):
        host = load({"kind": "none"}, zoo=zoo, graph="trace")
        assert host.graph is None
        assert not np.array_equal(host.forward(x), host.forward(x))


def test_resizing_defenses_fall_back_to_eager_mode() -> None:
    """R&P changes the input size, which the traced graph was not traced at."""
    host = load({"kind": "rp"}, graph="trace")
    assert host.graph is not None
    probs = host.forward(mnist_subset("test").images[:6])
    assert probs.shape == (6, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_chunked_passes_answer_like_one_pass() -> None:
    x = mnist_subset("test").images[:100]
    whole = load({"kind": "none"}, graph="trace")
    chunked = load({"kind": "none"}, graph="trace", chunk_images=32)
    assert chunked.chunk_images == 32
    np.testing.assert_allclose(chunked.forward(x), whole.forward(x), atol=1e-5)


def test_snd_noise_is_fresh_per_image_across_chunks() -> None:
    """The noise is drawn over the merged batch before chunking: 64 copies of one image get
    64 different answers, in the first chunk and in the second alike."""
    image = mnist_subset("test").images[:1]
    host = load({"kind": "snd", "sigma": 0.05}, graph="trace", chunk_images=32)
    probs = host.forward(np.repeat(image, 64, axis=0))
    assert len({row.tobytes() for row in probs[:32]}) == 32
    assert len({row.tobytes() for row in probs[32:]}) == 32


def test_the_default_pool_is_traced_and_chunked() -> None:
    pool = ModelPool.from_settings(Settings(torch_threads=1))
    try:
        host = pool.hosts[pool.default]
        assert host.graph is not None and host.chunk_images == Settings().forward_chunk_images
        assert pool.batch_wait_s == 0.0
    finally:
        pool.close()


def test_an_idle_batcher_answers_a_lone_request_at_once() -> None:
    """With the default wait of 0 a single request does not wait for company."""
    pool = ModelPool.from_settings(Settings(torch_threads=1, batch_wait_ms=0))
    host = pool.hosts[pool.default]
    x = mnist_subset("test").images[:1]

    async def ask() -> np.ndarray:
        try:
            return await pool.predict(host, x)
        finally:
            await pool.aclose()

    probs = asyncio.run(ask())
    assert probs.shape == (1, 10) and pool.batchers[host.name].batches == 1
