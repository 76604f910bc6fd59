"""HttpOracle against real servers: exact counts, budgets, output modes, errors, transport."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest

from attacks_client.oracles.base import BudgetExhausted, OracleError, ScoresUnavailable
from attacks_client.oracles.http import HttpOracle
from tests.attacks_client.conftest import LABEL_ONLY_MODEL
from tests.servers import ServiceProcess, free_port


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def test_count_equals_server_count(keyed_server: ServiceProcess) -> None:
    with HttpOracle(keyed_server.url, api_key="count-key") as oracle:
        assert oracle.input_shape == (1, 28, 28) and oracle.num_classes == 10
        for n in (1, 7, 256, 300, 2):  # 300 > the server's batch limit: two requests
            labels = oracle.labels(batch(n))
            assert labels.shape == (n,)
            assert oracle.queries == oracle.server_queries
        assert oracle.queries == 566
        assert oracle.requests == 6


def test_client_budget_stops_at_exactly_the_budget(keyed_server: ServiceProcess) -> None:
    with HttpOracle(keyed_server.url, api_key="mode-key", budget=37) as oracle:
        start = oracle.server_queries or 0
        oracle.labels(batch(30))
        with pytest.raises(BudgetExhausted):
            oracle.labels(batch(10))  # refused before sending: nothing counted
        assert oracle.queries == 30 and oracle.server_queries == start + 30
        oracle.labels(batch(7))
        assert oracle.queries == 37 == oracle.budget
        assert oracle.server_queries == start + 37
        with pytest.raises(BudgetExhausted):
            oracle.labels(batch(1))
        assert oracle.queries == 37


def test_server_429_is_budget_exhausted(keyed_server: ServiceProcess) -> None:
    with HttpOracle(keyed_server.url, api_key="budget-key") as oracle:  # server budget 50
        oracle.labels(batch(40))
        with pytest.raises(BudgetExhausted, match="refused"):
            oracle.labels(batch(20))
        assert oracle.queries == oracle.server_queries == 40
        oracle.labels(batch(10))
        assert oracle.queries == oracle.server_queries == 50
        with pytest.raises(BudgetExhausted):
            oracle.labels(batch(1))
        assert oracle.queries == 50


def test_label_and_score_modes(keyed_server: ServiceProcess) -> None:
    x = batch(5)
    with HttpOracle(keyed_server.url, api_key="mode-key", output="scores") as scores_oracle:
        assert scores_oracle.has_scores
        probs = scores_oracle.scores(x)
        assert probs.shape == (5, 10) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
        np.testing.assert_array_equal(scores_oracle.labels(x), probs.argmax(1))
        assert scores_oracle.queries == 10
    with HttpOracle(keyed_server.url, api_key="mode-key", output="label") as label_oracle:
        assert not label_oracle.has_scores
        np.testing.assert_array_equal(label_oracle.labels(x), probs.argmax(1))
        with pytest.raises(ScoresUnavailable):
            label_oracle.scores(x)
        assert label_oracle.queries == 5


def test_label_only_model(keyed_server: ServiceProcess) -> None:
    with pytest.raises(ScoresUnavailable, match="labels only"):
        HttpOracle(keyed_server.url, LABEL_ONLY_MODEL, api_key="mode-key", output="scores")
    with HttpOracle(keyed_server.url, LABEL_ONLY_MODEL, api_key="mode-key") as oracle:
        assert oracle.model == LABEL_ONLY_MODEL
        assert oracle.labels(batch(3)).shape == (3,)


def test_server_down_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(OracleError) as info:
        HttpOracle(url)
    assert str(info.value).startswith(f"cannot reach {url}")
    assert "\n" not in str(info.value)


def test_bad_key_and_unknown_model(keyed_server: ServiceProcess) -> None:
    with pytest.raises(OracleError, match="refused the API key") as info:
        HttpOracle(keyed_server.url, api_key="wrong")
    assert "\n" not in str(info.value)
    # /models is open; the key is checked on the first /predict
    with pytest.raises(OracleError, match="unknown model 'nope'.*served: resnet20-mnist"):
        HttpOracle(keyed_server.url, "nope", api_key="mode-key")


def test_float32_npy_transport_keeps_tiny_probes() -> None:
    seen: list[np.ndarray] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(
                200,
                json={
                    "models": [
                        {
                            "name": "m",
                            "input_shape": [1, 2, 2],
                            "num_classes": 2,
                            "default": True,
                            "outputs": ["scores", "label"],
                            "defense": {"kind": "none"},
                        }
                    ]
                },
            )
        assert request.headers["content-type"] == "application/x-npy"
        assert request.url.params["output"] == "label" and request.url.params["model"] == "m"
        assert request.headers["x-api-key"] == "k"
        array = np.load(io.BytesIO(request.content), allow_pickle=False)
        seen.append(array)
        return httpx.Response(
            200,
            json={"model": "m", "labels": [0] * len(array)},
            headers={"X-Queries-Used": str(sum(map(len, seen)))},
        )

    transport = httpx.MockTransport(handler)
    with HttpOracle("http://test", api_key="k", verify=False, transport=transport) as oracle:
        x = np.full((3, 1, 2, 2), 0.5, np.float32)
        x[0, 0, 0, 0] += 1e-5  # far below one 8-bit step
        oracle.labels(x)
    assert seen[0].dtype == np.float32
    np.testing.assert_array_equal(seen[0], x)


def test_503_is_retried_and_413_rechunks() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(
                200,
                json={
                    "models": [
                        {"name": "m", "input_shape": [1, 1, 1], "num_classes": 2, "default": True}
                    ]
                },
            )
        n = len(np.load(io.BytesIO(request.content)))
        calls.append(n)
        if len(calls) == 1:
            return httpx.Response(
                503,
                headers={"Retry-After": "0"},
                json={"error": {"code": "overloaded", "message": "busy"}},
            )
        if n > 4:
            return httpx.Response(
                413,
                json={
                    "error": {
                        "code": "batch_too_large",
                        "message": f"batch of {n} images exceeds the limit 4",
                    }
                },
            )
        return httpx.Response(200, json={"model": "m", "labels": [1] * n})

    with HttpOracle("http://test", verify=False, transport=httpx.MockTransport(handler)) as oracle:
        labels = oracle.labels(np.zeros((10, 1, 1, 1), np.float32))
        assert labels.tolist() == [1] * 10
        assert oracle.queries == 10 and oracle.max_batch == 4
    assert calls == [10, 10, 4, 4, 2]

    def always_busy(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/models":
            return httpx.Response(
                200,
                json={
                    "models": [
                        {"name": "m", "input_shape": [1, 1, 1], "num_classes": 2, "default": True}
                    ]
                },
            )
        return httpx.Response(
            503,
            headers={"Retry-After": "0"},
            json={"error": {"code": "counter_unavailable", "message": "accounting is down"}},
        )

    with HttpOracle(
        "http://test", retries=2, verify=False, transport=httpx.MockTransport(always_busy)
    ) as o:
        with pytest.raises(OracleError, match="unavailable: accounting is down"):
            o.labels(np.zeros((1, 1, 1, 1), np.float32))
        assert o.queries == 0
