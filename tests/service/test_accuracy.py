"""Clean accuracy of the committed checkpoint, with and without SND (paper Table 1 shape)."""

from __future__ import annotations

import io

import httpx
import numpy as np

from service.models import get_spec
from service.offline.accuracy import markdown, table
from service.offline.datasets import mnist_subset
from tests.servers import ServiceProcess


def test_snd_costs_under_one_point_of_accuracy_over_5_seeds() -> None:
    model = get_spec("resnet20-mnist").build()
    rows = table(model, mnist_subset("test"), sigmas=[0.01], seeds=5)
    baseline, snd = rows
    assert baseline.mean >= 0.98  # the model card's promise
    assert len(snd.accuracies) == 5 and len(set(snd.accuracies)) > 1  # 5 different draws
    assert abs(snd.mean - baseline.mean) <= 0.01
    assert "SND (σ = 0.01)" in markdown(rows)


def test_accuracy_over_http_matches_in_process(snd_server: ServiceProcess) -> None:
    test = mnist_subset("test")
    labels = []
    for i in range(0, len(test), 250):
        buf = io.BytesIO()
        np.save(buf, test.images[i : i + 250])
        r = httpx.post(
            snd_server.url + "/predict",
            content=buf.getvalue(),
            params={"output": "label"},
            headers={"Content-Type": "application/x-npy"},
            timeout=60,
        )
        assert r.status_code == 200
        labels.extend(r.json()["labels"])
    accuracy = float((np.array(labels) == test.labels).mean())
    assert accuracy >= 0.97
