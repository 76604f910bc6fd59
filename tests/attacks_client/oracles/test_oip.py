"""``OipOracle`` against real OIP v2 servers: the gateway's /v2 routes (binary and JSON) and
kserve's ModelServer directly; the same answers and counts as ``HttpOracle``, budgets, the
label-only policy, typed errors, and the factory's protocol choice."""

from __future__ import annotations

import numpy as np
import pytest

from attacks_client.oracles import HttpOracle, OipOracle, open_oracle
from attacks_client.oracles.base import BudgetExhausted, OracleError, ScoresUnavailable
from attacks_client.oracles.factory import protocol_of
from tests.attacks_client.conftest import LABEL_ONLY_MODEL
from tests.servers import ServiceProcess, UpstreamProcess

MODEL = "resnet20-mnist"


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def digits(mnist_test: tuple[np.ndarray, np.ndarray], n: int = 12) -> np.ndarray:
    return mnist_test[0][:n]


@pytest.mark.parametrize("binary", [None, False], ids=["binary-as-listed", "json"])
def test_v2_oracle_answers_and_counts_like_the_predict_oracle(
    keyed_server: ServiceProcess, mnist_test: tuple, binary: bool | None
) -> None:
    x = digits(mnist_test)
    with HttpOracle(keyed_server.url, MODEL, api_key="mode-key", output="scores") as http:
        expected = http.scores(x)
    with OipOracle(
        keyed_server.url, MODEL, api_key="mode-key", output="scores", binary=binary
    ) as oracle:
        assert oracle.binary is (binary is None)  # the gateway lists binary_tensor_data
        assert oracle.input_shape == (1, 28, 28) and oracle.num_classes == 10
        assert oracle.input_name == "input" and oracle.score_output == "probabilities"
        start = oracle.queries
        np.testing.assert_array_equal(oracle.scores(x), expected)
        np.testing.assert_array_equal(oracle.labels(x), expected.argmax(1))
        assert oracle.queries - start == 2 * len(x) and oracle.requests == 2
        assert oracle.server_queries is not None and oracle.server_queries >= oracle.queries


def test_budgets_client_side_and_server_429(keyed_server: ServiceProcess) -> None:
    with OipOracle(keyed_server.url, MODEL, api_key="count-key", budget=7) as oracle:
        oracle.labels(batch(5))
        with pytest.raises(BudgetExhausted):
            oracle.labels(batch(3))  # refused before sending
        assert oracle.queries == 5
    with OipOracle(keyed_server.url, MODEL, api_key="v2-budget-key") as oracle:  # server: 30
        oracle.labels(batch(25))
        with pytest.raises(BudgetExhausted, match="refused"):
            oracle.labels(batch(6))
        oracle.labels(batch(5))
        assert oracle.queries == oracle.server_queries == 30


def test_label_only_model_and_typed_errors(keyed_server: ServiceProcess) -> None:
    url = "v2+" + keyed_server.url
    with pytest.raises(ScoresUnavailable):
        open_oracle(url, LABEL_ONLY_MODEL, api_key="mode-key", output="scores")
    with open_oracle(url, LABEL_ONLY_MODEL, api_key="mode-key") as oracle:
        assert isinstance(oracle, OipOracle) and not oracle.has_scores
        assert oracle.labels(batch(3)).shape == (3,)
    with pytest.raises(OracleError, match="refused the API key"):
        OipOracle(keyed_server.url, MODEL, api_key="wrong")
    with pytest.raises(OracleError, match="unknown model"):
        OipOracle(keyed_server.url, "nope", api_key="mode-key")
    with pytest.raises(OracleError, match="needs a model name"):
        OipOracle(keyed_server.url, None, api_key="mode-key")
    with OipOracle(keyed_server.url, MODEL, api_key="mode-key", max_batch=300) as oracle:
        oracle.labels(batch(257))  # the server's limit (256) is learned from its 413
        assert oracle.max_batch == 256 and oracle.queries == 257


def test_any_oip_server_kserve_directly(
    kserve_upstream: UpstreamProcess, keyed_server: ServiceProcess, mnist_test: tuple
) -> None:
    """kserve answers logits in an output of its own name, JSON only: the oracle reads the
    metadata, softmaxes, and answers what the gateway's undefended copy of the network does."""
    x = digits(mnist_test)
    with OipOracle(kserve_upstream.url, "resnet20", output="scores") as oracle:
        assert oracle.input_name == "images" and oracle.score_output == "logits"
        assert oracle.label_output is None and oracle.binary is False
        scores = oracle.scores(x)
        assert oracle.labels(x).tolist() == scores.argmax(1).tolist()
        assert oracle.queries == 2 * len(x) and oracle.server_queries is None
    with HttpOracle(keyed_server.url, MODEL, api_key="mode-key", output="scores") as http:
        np.testing.assert_allclose(scores, http.scores(x), rtol=1e-4, atol=1e-5)
    with OipOracle(kserve_upstream.url, "resnet20", binary=True) as forced:  # kserve takes it
        np.testing.assert_array_equal(forced.labels(x), scores.argmax(1))


def test_protocol_choice() -> None:
    assert protocol_of("http://h:1") == ("http://h:1", "predict")
    assert protocol_of("v2+http://h:1") == ("http://h:1", "v2")
    assert protocol_of("https://h", "v2") == ("https://h", "v2")
    with pytest.raises(ValueError, match="OIP v2 URL"):
        protocol_of("v2+http://h:1", "predict")
    with pytest.raises(ValueError, match="protocol must be"):
        protocol_of("http://h:1", "grpc")
