"""The decision-based attacks against real servers over HTTP, with small budgets."""

from __future__ import annotations

import numpy as np
import pytest

from attacks_client.attacks import get_attack
from attacks_client.data import ImageSet
from attacks_client.evaluation.scoring import select_images
from attacks_client.oracles.http import HttpOracle
from tests.servers import ServiceProcess

DECISION = ["hsja", "boundary", "sign-opt", "geoda", "popskipjump"]
BUDGET = 700
_SENT: list[int] = []


def attacker_total(sent: int) -> int:
    """The attacker key's total over this module's tests so far."""
    _SENT.append(sent)
    return sum(_SENT)


@pytest.mark.parametrize("name", DECISION)
def test_attack_finds_adversarials_over_http(
    name: str, keyed_server: ServiceProcess, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    url = keyed_server.url
    with (
        HttpOracle(url, api_key="attack-key") as oracle,
        HttpOracle(url, api_key="eval-key") as judge,
    ):
        samples = select_images(ImageSet(images[:40], labels[:40]), 2, seed=0, evaluator=judge)
        assert len(samples) == 2
        for i, sample in enumerate(samples):
            sent = oracle.queries
            result = get_attack(name)()(oracle, sample.image, sample.label, BUDGET, seed=i)
            assert oracle.queries - sent == result.queries <= BUDGET
            assert result.updates, f"{name} found no adversarial start"
            assert result.final_l2 < result.updates[0].l2  # it made progress
            final = result.final_candidate
            assert final is not None
            assert judge.labels(final[None])[0] != sample.label  # really adversarial
        # the attacker's identity is its own: the server counted exactly what it sent
        # (over the tests of all the attacks)
        assert oracle.server_queries == attacker_total(oracle.queries)


def test_hsja_against_snd_counts_exactly(
    snd_server: ServiceProcess, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    with HttpOracle(snd_server.url) as oracle:
        assert oracle.defense["kind"] == "snd"
        oracle.labels(images[:1])  # learn the server's count for this caller
        base = oracle.server_queries
        assert base is not None
        result = get_attack("hsja")()(oracle, images[0], int(labels[0]), 300, seed=0)
        assert result.queries <= 300 and oracle.queries == 1 + result.queries
        assert oracle.server_queries == base + result.queries
        assert len(result.query_l2) == result.queries
