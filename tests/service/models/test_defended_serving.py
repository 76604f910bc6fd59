"""The comparison defenses over a real server: one server, several endpoints (the
``SND_MODELS`` example of docs/serving/defenses.md): RSE, PNI, PGD-AT, PGD-AT + SND, R&P and
salt-and-pepper SND."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.servers import ServiceProcess
from tests.service.cached_data import mnist_test_split

ENDPOINTS = [
    {"name": "rse", "zoo": "resnet20-mnist-rse", "defense": {"kind": "none"}},
    {"name": "pni", "zoo": "resnet20-mnist-pni", "defense": {"kind": "none"}},
    {"name": "pgdat", "zoo": "resnet20-mnist-pgdat", "defense": {"kind": "none"}},
    {"name": "pgdat-snd", "zoo": "resnet20-mnist-pgdat", "defense": {"kind": "snd", "sigma": 0.01}},
    {"name": "rp", "zoo": "resnet20-mnist", "defense": {"kind": "rp"}},
    {
        "name": "snd-salt-pepper",
        "zoo": "resnet20-mnist",
        "defense": {"kind": "snd", "sigma": 0.01, "noise": "salt_pepper", "sp_amplitude": 0.1},
    },
]


@pytest.fixture(scope="module")
def defended_server() -> Iterator[ServiceProcess]:
    with ServiceProcess({"models": ENDPOINTS}) as server:
        yield server


def test_models_route_lists_every_endpoint(defended_server: ServiceProcess) -> None:
    info = {m["name"]: m for m in httpx.get(defended_server.url + "/models").json()["models"]}
    assert set(info) == {e["name"] for e in ENDPOINTS}
    assert info["rp"]["defense"]["kind"] == "rp"
    assert info["pgdat-snd"]["architecture"] == "resnet20-mnist-pgdat"
    assert info["snd-salt-pepper"]["defense"]["noise"] == "salt_pepper"


@pytest.mark.parametrize("name", [e["name"] for e in ENDPOINTS])
def test_each_endpoint_answers_a_predict(defended_server: ServiceProcess, name: str) -> None:
    test = mnist_test_split()
    buf = io.BytesIO()
    np.save(buf, test.images[:8])
    r = httpx.post(
        defended_server.url + "/predict",
        content=buf.getvalue(),
        params={"model": name, "output": "scores"},
        headers={"Content-Type": "application/x-npy"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    scores = np.array(r.json()["scores"])
    assert scores.shape == (8, 10)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-4)
    assert (scores.argmax(1) == test.labels[:8]).mean() >= 0.75
