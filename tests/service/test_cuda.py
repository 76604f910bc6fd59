"""The service on a CUDA device (``pytest -m cuda``; ``scripts/gpu-check.sh`` runs these).

Skipped where there is no CUDA device: these machines have none, so these tests are measured
only when a GPU is lent (see docs/performance-gpu.md), never counted as passing on a CPU.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import torch

from service.defenses import SmallNoiseDefense
from service.model_settings import ModelSettings
from service.offline.datasets import mnist_subset
from service.serving.local import LocalHost
from tests.servers import ServiceProcess

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]
PRECISIONS = ("fp32", "fp16", "bf16")


def host(precision: str, sigma: float = 0.01) -> LocalHost:
    defense = {"kind": "snd", "sigma": sigma} if sigma else {"kind": "none"}
    return LocalHost.load(
        ModelSettings(defense=defense), torch.device("cuda"), False, precision=precision
    )


def test_snd_noise_is_drawn_on_the_device_with_std_sigma() -> None:
    snd = SmallNoiseDefense(0.01)
    x = torch.full((64, 1, 28, 28), 0.5, device="cuda")
    noisy = snd(x)
    assert noisy.device.type == "cuda" and noisy.dtype == torch.float32
    eta = (noisy - x).flatten()
    assert abs(float(eta.mean())) < 5e-4 and abs(float(eta.std()) - 0.01) < 5e-4
    assert all(g.device.type == "cuda" for g in snd._generators.values())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_answers_with_fresh_noise_per_image(precision: str) -> None:
    test = mnist_subset("test")
    served = host(precision)
    same = np.repeat(test.images[1:2], 32, axis=0)
    probs = served.forward(same)
    assert probs.shape == (32, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(1), 1, atol=1e-3)
    # each copy got its own noise: the answers differ, and two calls differ too
    assert len({row.tobytes() for row in probs}) == 32
    assert not np.array_equal(probs, served.forward(same))
    accuracy = float((served.forward(test.images).argmax(1) == test.labels).mean())
    assert accuracy > 0.95


@pytest.mark.parametrize("precision", ("fp16", "bf16"))
def test_half_precision_labels_agree_with_fp32(precision: str) -> None:
    test = mnist_subset("test")
    fp32 = host("fp32", sigma=0).forward(test.images).argmax(1)
    half = host(precision, sigma=0).forward(test.images).argmax(1)
    assert float((half == fp32).mean()) >= 0.99


def test_the_server_on_cuda_answers_predict() -> None:
    x = mnist_subset("test").images[:8]
    buf = io.BytesIO()
    np.save(buf, x)
    settings = {
        "defense": "snd",
        "sigma": 0.01,
        "device": "cuda",
        "precision": "fp16",
        "log_level": "info",
    }
    with ServiceProcess(settings) as server:
        response = httpx.post(
            server.url + "/predict",
            content=buf.getvalue(),
            params={"output": "scores"},
            headers={"Content-Type": "application/x-npy"},
            timeout=60,
        )
        log = server.log()
    assert response.status_code == 200, response.text
    scores = np.asarray(response.json()["scores"])
    assert scores.shape == (8, 10) and np.allclose(scores.sum(1), 1, atol=1e-3)
    assert "on cuda" in log, log
