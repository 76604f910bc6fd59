"""Locust load test of ``POST /predict``: label and score users, single images and batches.

Headless, with CSV and percentiles (run once with SND on and once off, same machine):

    python -m service --defense snd --sigma 0.01 --port 8000 &
    locust -f load_tests/locustfile.py --headless -u 32 -r 8 -t 60s \
        --host http://127.0.0.1:8000 --csv runs/locust-snd --only-summary

Environment: ``SND_LOAD_API_KEYS`` (comma-separated keys the users rotate through; empty for
an open server), ``SND_LOAD_MODEL`` (default: the server's default model), ``SND_LOAD_SHAPE``
(``C,H,W``, default ``1,28,28``).
"""

from __future__ import annotations

import io
import itertools
import os

import numpy as np
from locust import FastHttpUser, between, task

SHAPE = tuple(int(d) for d in os.environ.get("SND_LOAD_SHAPE", "1,28,28").split(","))
MODEL = os.environ.get("SND_LOAD_MODEL")
KEYS = itertools.cycle(
    [k for k in os.environ.get("SND_LOAD_API_KEYS", "").split(",") if k] or [None]
)


def npy(batch: int, seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).random((batch, *SHAPE), dtype=np.float32))
    return buf.getvalue()


SINGLE, BATCH = npy(1, 0), npy(32, 1)


class PredictUser(FastHttpUser):
    """An API client: mostly single-image label queries (a decision-based attacker's pattern),
    some score queries and some 32-image batches."""

    abstract = True
    wait_time = between(0.0, 0.01)
    output = "label"

    def on_start(self) -> None:
        key = next(KEYS)
        self.headers = {"Content-Type": "application/x-npy"}
        if key:
            self.headers["X-API-Key"] = key
        self.params = f"?output={self.output}" + (f"&model={MODEL}" if MODEL else "")

    def predict(self, body: bytes, name: str) -> None:
        with self.client.post(
            "/predict" + self.params,
            data=body,
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(8)
    def single(self) -> None:
        self.predict(SINGLE, f"{self.output} x1")

    @task(1)
    def batch(self) -> None:
        self.predict(BATCH, f"{self.output} x32")


class LabelUser(PredictUser):
    weight = 3
    output = "label"


class ScoreUser(PredictUser):
    weight = 1
    output = "scores"
