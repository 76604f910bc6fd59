"""SimBA and SimBA-DCT: block order, counting, budgets, and success on the embedded model."""

from __future__ import annotations

import numpy as np
import pytest

from attacks_client.attacks.simba import SimBA, SimBADCT, block_order, scaled_block_params
from attacks_client.oracles.base import FunctionOracle, ScoresUnavailable
from tests.attacks_client.score_helpers import (
    constant_oracle,
    correct_images,
    linear_oracle,
    victim_oracle,
    victim_predict,
)


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3)])
def test_scaled_block_order_is_a_valid_permutation(size: int, channels: int) -> None:
    freq_dims, stride = scaled_block_params(size)
    assert (freq_dims, stride) == (4, 1)
    order = block_order(size, channels, freq_dims, stride, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(channels * size * size))
    # low frequencies first: the first C * freq_dims^2 indices are the top-left block
    c, i, j = np.unravel_index(order[: channels * freq_dims**2], (channels, size, size))
    assert i.max() < freq_dims and j.max() < freq_dims
    assert set(c.tolist()) == set(range(channels))
    # then bands of `stride` rows/columns, in order (random within a band)
    _, i, j = np.unravel_index(order, (channels, size, size))
    edge = np.maximum(i, j)
    band = np.where(edge < freq_dims, -1, (edge - freq_dims) // stride)
    assert np.all(np.diff(band) >= 0)


def test_paper_setting_at_224_px_and_invalid_orders() -> None:
    assert scaled_block_params(224) == (28, 7)
    order = block_order(224, 3, 28, 7, np.random.default_rng(0))
    assert len(np.unique(order)) == 3 * 224 * 224
    with pytest.raises(ValueError, match="divisible"):
        block_order(28, 1, 7, 2)  # (28 - 7) % 2 != 0
    with pytest.raises(ValueError, match="divisible"):
        SimBADCT(freq_dims=5, stride=2)(victim_oracle(), *_first_image(), 10)


def _first_image() -> tuple[np.ndarray, int]:
    images, labels = correct_images()
    return images[0], int(labels[0])


@pytest.mark.parametrize("cls", [SimBA, SimBADCT])
def test_finds_adversarial_examples_on_the_embedded_model(cls: type[SimBA]) -> None:
    images, labels = correct_images()
    attack = cls()
    count = 2 if cls is SimBA else 3  # pixel SimBA needs ~500 queries an image
    for x0, label in zip(images[:count], labels[:count], strict=True):
        oracle = victim_oracle()
        result = attack(oracle, x0, int(label), 3000, seed=0)
        assert result.stop_reason == "converged" and result.final_candidate is not None
        assert result.queries == oracle.queries <= 3000
        assert len(result.query_l2) == result.queries
        candidate = result.final_candidate
        assert victim_predict(candidate[None]).argmax() != label
        assert candidate.min() >= 0.0 and candidate.max() <= 1.0
        assert result.final_l2 < 4.0


def test_counts_one_query_for_x0_and_at_most_two_per_coordinate() -> None:
    # a model that never changes its answer: every coordinate costs both probes
    images, labels = correct_images()
    for budget in (1, 2, 21, 40):
        oracle = constant_oracle(label=int(labels[0]))
        result = SimBA()(oracle, images[0], int(labels[0]), budget, seed=0)
        assert result.stop_reason == "budget"
        assert result.queries == oracle.queries == budget
        assert not result.updates


def test_one_pass_over_the_basis_then_stop() -> None:
    oracle = constant_oracle((1, 4, 4))
    x0 = np.full((1, 4, 4), 0.5, np.float32)
    result = SimBA()(oracle, x0, 0, 10_000)
    assert result.stop_reason == "converged" and result.queries == 1 + 2 * 16
    result = SimBA(max_passes=3)(constant_oracle((1, 4, 4)), x0, 0, 10_000)
    assert result.queries == 1 + 3 * 2 * 16


def test_simba_dct_on_three_channels_and_targeted() -> None:
    oracle, x0, label = linear_oracle((3, 32, 32), seed=1, scale=30.0)
    result = SimBADCT()(oracle, x0, label, 2000, seed=0)
    assert result.final_candidate is not None and result.queries == oracle.queries
    assert oracle._predict(result.final_candidate[None]).argmax() != label
    target = (label + 1) % 10
    oracle, x0, label = linear_oracle((3, 32, 32), seed=1, scale=30.0)
    result = SimBADCT()(oracle, x0, label, 4000, target=target, seed=0)
    assert result.final_candidate is not None
    assert oracle._predict(result.final_candidate[None]).argmax() == target


def test_label_only_endpoint_stops_at_once() -> None:
    x0, label = _first_image()
    for cls in (SimBA, SimBADCT):
        oracle = victim_oracle(scores=False)
        with pytest.raises(ScoresUnavailable):
            cls()(oracle, x0, label, 100)
        assert oracle.queries == 0


def test_misclassified_start_costs_one_query() -> None:
    oracle = FunctionOracle(
        lambda x: np.tile(np.eye(10, dtype=np.float32)[3], (len(x), 1)), (1, 28, 28), 10
    )
    result = SimBA()(oracle, np.zeros((1, 28, 28), np.float32), 5, 100)
    assert result.queries == 1 and result.final_l2 == 0.0
