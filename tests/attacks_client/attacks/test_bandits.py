"""Bandit-TD: tiling prior, counting, the ε-ball, and success on the embedded model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks_client.attacks.bandits import BanditTD, scaled_tile_size, upsample_nearest
from attacks_client.oracles.base import ScoresUnavailable
from tests.attacks_client.score_helpers import (
    assert_converges_on_victim,
    constant_oracle,
    correct_images,
    linear_oracle,
    victim_oracle,
)


@pytest.mark.parametrize(
    ("shape", "tiles"), [((1, 28, 28), 9), ((3, 32, 32), 11), ((3, 224, 224), 50)]
)
def test_tiling_prior_shape_and_upsampling(shape: tuple[int, int, int], tiles: int) -> None:
    assert scaled_tile_size(shape[1]) == tiles
    attack = BanditTD()
    assert attack.prior_shape(shape) == (shape[0], tiles, tiles)
    assert BanditTD(tiling=False).prior_shape(shape) == shape
    assert BanditTD(tile_size=4).prior_shape(shape) == (shape[0], 4, 4)
    prior = np.random.default_rng(0).standard_normal((shape[0], tiles, tiles))
    up = upsample_nearest(prior, shape[1:])
    assert up.shape == shape
    reference = torch.nn.Upsample(size=shape[1:])(torch.from_numpy(prior)[None])[0].numpy()
    np.testing.assert_array_equal(up, reference)  # the reference's nn.Upsample (nearest)


def test_finds_adversarial_examples_on_the_embedded_model() -> None:
    assert_converges_on_victim(BanditTD(epsilon=3.0), 3000, 3.0)


def test_queries_stay_in_the_ball_and_in_budget() -> None:
    oracle, x0, label = linear_oracle((1, 28, 28), seed=2, scale=3.0)
    result = BanditTD(epsilon=0.5)(oracle, x0, label, 300, seed=0)
    assert result.queries == oracle.queries <= 300
    # probes may leave the ball by fd_eta; images stay in it
    assert result.query_l2.max() <= 0.5 + 0.01 + 1e-4


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 30, 31, 32, 1001])
def test_two_queries_per_iteration_no_wasted_check(budget: int) -> None:
    # x0 (1), then per iteration only the 2 antithetic probes (one batch): the new image's
    # success check reuses the next probes' answers, so a budget B gives (B - 1) // 2 iterations
    images, labels = correct_images()
    oracle = constant_oracle(label=int(labels[0]))
    result = BanditTD()(oracle, images[0], int(labels[0]), budget, seed=0)
    iterations = (budget - 1) // 2
    assert result.stop_reason == "budget" and not result.updates
    assert result.queries == oracle.queries == 1 + 2 * iterations
    assert result.reference_queries == 2 * iterations  # the reference does not count x0


def test_an_adversarial_probe_is_the_candidate() -> None:
    oracle, x0, label = linear_oracle((1, 28, 28), seed=2, scale=3.0)
    result = BanditTD(epsilon=3.0)(oracle, x0, label, 3000, seed=0)
    assert result.stop_reason == "converged" and result.updates
    final = result.final_candidate
    assert final is not None and oracle.labels(final[None])[0] != label
    # the candidate is an image the attack sent and paid for: one of the last two probes
    assert min(abs(result.final_l2 - float(v)) for v in result.query_l2[-2:]) < 1e-4
    assert (result.queries - 1) % 2 == 0


def test_label_only_endpoint_stops_at_once() -> None:
    images, labels = correct_images()
    oracle = victim_oracle(scores=False)
    with pytest.raises(ScoresUnavailable):
        BanditTD()(oracle, images[0], int(labels[0]), 100)
    assert oracle.queries == 0


def test_loss_is_cross_entropy_with_resolution_near_one() -> None:
    class _Oracle:
        label, target = 2, None

    probs = np.array(
        [[1e-9, 2e-9, 1.0, 0, 0, 0, 0, 0, 0, 0], [0.25, 0.25, 0.5, 0, 0, 0, 0, 0, 0, 0]], np.float32
    )
    loss = BanditTD._loss(probs, _Oracle())  # type: ignore[arg-type]
    assert loss[0] == pytest.approx(3e-9, rel=1e-6)  # -log(1 - 3e-9), not log(1.0) = 0
    assert loss[1] == pytest.approx(np.log(2.0))
