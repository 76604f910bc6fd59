"""The adaptive (expectation) attack, paper Sec. 4.2: ``RepeatOracle`` with every attack.

With T repeats every logical query costs exactly T real queries: on a deterministic endpoint
the repeated attack follows the plain attack's trajectory and spends T times its queries, and
the server counts exactly what the client counts. Score attacks stop at once, spending nothing,
against a label-only endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from attacks_client.attacks import ATTACKS, get_attack
from attacks_client.oracles.base import Oracle, ScoresUnavailable
from attacks_client.oracles.http import HttpOracle
from attacks_client.oracles.repeat import RepeatOracle
from tests.attacks_client.score_helpers import correct_images, linear_oracle
from tests.servers import ServiceProcess

SCORE_ATTACKS = ("simba", "simba-dct", "bandit-td", "subspace")
PARAMS: dict[str, dict[str, Any]] = {"bandit-td": {"epsilon": 2.0}, "subspace": {"epsilon": 2.0}}
LABELS_MODEL = "mnist-labels"


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceProcess]:
    """resnet20-mnist without defense (deterministic), and a label-only copy; open."""
    models = [
        {"name": "resnet20-mnist", "defense": {"kind": "none"}},
        {
            "name": LABELS_MODEL,
            "zoo": "resnet20-mnist",
            "defense": {"kind": "none"},
            "label_only": True,
        },
    ]
    with ServiceProcess({"models": models}) as process:
        yield process


def _server_count(url: str, model: str = "resnet20-mnist") -> int:
    """The caller's count on the server after one probe (the probe included)."""
    with HttpOracle(url, model, output="label") as probe:
        probe.labels(np.zeros((1, 1, 28, 28), np.float32))
        assert probe.server_queries is not None
        return probe.server_queries


@pytest.mark.parametrize("name", list(ATTACKS))
def test_repeat_spends_t_times_the_plain_queries_for_every_attack(name: str) -> None:
    cls = get_attack(name)
    results = []
    for repeats in (1, 3):
        oracle, x0, label = linear_oracle((1, 28, 28), seed=0)
        wrapped = RepeatOracle(oracle, repeats)
        result = cls(**PARAMS.get(name, {}))(wrapped, x0, label, 200 * repeats, seed=4)
        assert result.queries == oracle.queries <= 200 * repeats
        assert len(result.query_l2) == result.queries
        results.append(result)
    plain, repeated = results
    assert repeated.queries == 3 * plain.queries
    assert repeated.stop_reason == plain.stop_reason
    assert [u.queries for u in repeated.updates] == [3 * u.queries for u in plain.updates]
    assert [u.l2 for u in repeated.updates] == [u.l2 for u in plain.updates]


@pytest.mark.parametrize("name", SCORE_ATTACKS)
def test_repeat_counts_agree_with_the_server(server: ServiceProcess, name: str) -> None:
    images, labels = correct_images()
    x0, label = images[1], int(labels[1])
    attack = get_attack(name)(**PARAMS.get(name, {}))
    spent = {}
    for repeats in (1, 3):
        start = _server_count(server.url)
        with HttpOracle(server.url, "resnet20-mnist", output="scores") as http:
            oracle: Oracle = RepeatOracle(http, repeats) if repeats > 1 else http
            result = attack(oracle, x0, label, 20 * repeats, seed=0)
            assert result.stop_reason == "budget"
            assert http.server_queries is not None
            assert result.queries == http.queries == http.server_queries - start
        spent[repeats] = result.queries
    assert spent[3] == 3 * spent[1]


def test_an_attack_over_http_succeeds_and_counts_exactly(server: ServiceProcess) -> None:
    images, labels = correct_images()
    attack = get_attack("simba-dct")()
    for x0, label in zip(images[:2], labels[:2], strict=True):
        start = _server_count(server.url)
        with HttpOracle(server.url, "resnet20-mnist", output="scores") as http:
            result = attack(http, x0, int(label), 2000, seed=0)
            assert result.stop_reason == "converged" and result.final_candidate is not None
            assert http.server_queries is not None
            assert result.queries == http.queries == http.server_queries - start
            assert http.labels(result.final_candidate[None])[0] != label


@pytest.mark.parametrize("name", SCORE_ATTACKS)
def test_score_attacks_stop_at_once_on_a_label_only_endpoint(
    server: ServiceProcess, name: str
) -> None:
    images, labels = correct_images()
    start = _server_count(server.url, LABELS_MODEL)
    with HttpOracle(server.url, LABELS_MODEL, output="label") as http:
        assert not http.has_scores
        for oracle in (http, RepeatOracle(http, 5)):
            with pytest.raises(ScoresUnavailable):
                get_attack(name)()(oracle, images[0], int(labels[0]), 100)
        assert http.queries == 0
    assert _server_count(server.url, LABELS_MODEL) == start + 1  # only the probes counted
    with pytest.raises(ScoresUnavailable):
        HttpOracle(server.url, LABELS_MODEL, output="scores")
