"""Square Attack (L2 and L∞): the authors' schedule and bumps, budget and counting, the ball, and
the noise-aware options' spending."""

from __future__ import annotations

import numpy as np
import pytest

from attacks_client.attacks import get_attack
from attacks_client.attacks.params import parse_params
from attacks_client.attacks.square import (
    SquareAttack,
    p_selection,
    pseudo_gaussian_bump,
    pseudo_gaussian_rectangle,
)
from attacks_client.oracles import RepeatOracle
from attacks_client.oracles.base import FunctionOracle
from tests.attacks_client.score_helpers import constant_oracle, linear_oracle

SHAPE = (1, 28, 28)


class CountingOracle(FunctionOracle):
    """A FunctionOracle that keeps every batch it was sent."""

    def __init__(self, inner: FunctionOracle) -> None:
        super().__init__(inner._predict, inner.input_shape, inner.num_classes)
        self.batches: list[np.ndarray] = []

    def scores(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(np.array(x, copy=True))
        return super().scores(x)


# the authors' p_selection (attack.py) with p_init = 0.1 over 10,000 iterations, read off its
# branches: it <= 10 -> p, (10, 50] -> p/2, (50, 200] -> p/4, (200, 500] -> p/8,
# (500, 1000] -> p/16, (1000, 2000] -> p/32, (2000, 4000] -> p/64, (4000, 6000] -> p/128,
# (6000, 8000] -> p/256, (8000, 10000] -> p/512
SCHEDULE = [
    (0, 10_000, 0.1),
    (10, 10_000, 0.1),
    (11, 10_000, 0.05),
    (50, 10_000, 0.05),
    (51, 10_000, 0.025),
    (200, 10_000, 0.025),
    (350, 10_000, 0.0125),
    (501, 10_000, 0.00625),
    (1500, 10_000, 0.003125),
    (3000, 10_000, 0.0015625),
    (5000, 10_000, 0.00078125),
    (7000, 10_000, 0.000390625),
    (9999, 10_000, 0.0001953125),
    # rescaled to the iteration budget: iteration 100 of 1,000 is iteration 1,000 of 10,000
    (100, 1_000, 0.00625),
    (3, 1_000, 0.05),
]


@pytest.mark.parametrize(("iteration", "n_iters", "expected"), SCHEDULE)
def test_p_schedule_is_the_authors(iteration: int, n_iters: int, expected: float) -> None:
    assert p_selection(0.1, iteration, n_iters) == pytest.approx(expected)


def test_bumps_are_the_authors() -> None:
    # pseudo_gaussian_pert_rectangles(3, 3) and (2, 5) of the authors' attack.py
    np.testing.assert_allclose(
        pseudo_gaussian_rectangle(3, 3),
        [[0.174078] * 3, [0.174078, 0.870388, 0.174078], [0.174078] * 3],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        pseudo_gaussian_rectangle(2, 5),
        [
            [0.069526, 0.225959, 0.225959, 0.225959, 0.069526],
            [0.069526, 0.225959, 0.851691, 0.225959, 0.069526],
        ],
        atol=1e-6,
    )
    bump = pseudo_gaussian_bump(5, np.random.default_rng(0))
    assert np.linalg.norm(bump) == pytest.approx(1.0)
    # two halves of opposite sign (rows 0-1 positive, 2-4 negative), or the same transposed
    upright = bump if (bump[:2] > 0).all() else bump.T
    assert (upright[:2] > 0).all() and (upright[2:] < 0).all()


@pytest.mark.parametrize(("norm", "epsilon"), [("2", 3.0), ("inf", 0.15)])
def test_finds_adversarials_inside_the_ball(norm: str, epsilon: float) -> None:
    found = 0
    for seed in range(4):
        inner, x0, label = linear_oracle(SHAPE, seed=seed, scale=4.0)
        oracle = CountingOracle(inner)
        result = SquareAttack(norm=norm, epsilon=epsilon)(  # type: ignore[arg-type]
            oracle, x0, label, 2000, seed=seed
        )
        sent = np.concatenate(oracle.batches)
        assert np.isfinite(sent).all() and sent.min() >= 0 and sent.max() <= 1
        distance = (
            np.linalg.norm((sent - x0).reshape(len(sent), -1), axis=1)
            if norm == "2"
            else np.abs(sent - x0).reshape(len(sent), -1).max(1)
        )
        assert distance.max() <= epsilon + 1e-6  # never outside the ball
        assert result.queries == oracle.queries == len(sent)
        if result.stop_reason == "converged":
            found += 1
            assert result.final_candidate is not None
            assert inner.scores(result.final_candidate[None])[0].argmax() != label
    assert found >= 3


def test_one_query_per_iteration_plus_the_start() -> None:
    oracle = CountingOracle(constant_oracle())
    x0 = np.full(SHAPE, 0.5, np.float32)
    result = SquareAttack()(oracle, x0, 0, 50, seed=0)
    assert result.stop_reason == "budget" and result.queries == 50
    assert [len(b) for b in oracle.batches] == [1] * 50
    assert not result.updates  # never adversarial: no candidate


def test_already_misclassified_start_stops_at_once() -> None:
    oracle = CountingOracle(constant_oracle(label=3))
    x0 = np.full(SHAPE, 0.5, np.float32)
    result = SquareAttack(norm="inf")(oracle, x0, 0, 100, seed=0)
    assert result.stop_reason == "converged" and result.queries == 1
    assert result.final_candidate is not None


def test_remeasure_sends_incumbent_and_candidate_together() -> None:
    oracle = CountingOracle(constant_oracle())
    x0 = np.full(SHAPE, 0.5, np.float32)
    result = SquareAttack(remeasure=True)(oracle, x0, 0, 41, seed=0)
    assert [len(b) for b in oracle.batches] == [1] + [2] * 20
    assert result.queries == 41
    # the first image of each pair is the incumbent: never improved, so always the start
    assert all(np.array_equal(b[0], oracle.batches[0][0]) for b in oracle.batches[1:])


class FlakyOracle(FunctionOracle):
    """Adversarial (class 1 on top) on the answers whose index is in ``lucky``, else class 0."""

    def __init__(self, lucky: set[int]) -> None:
        self.lucky, self.count = lucky, 0
        super().__init__(self._answer, SHAPE, 10)

    def _answer(self, x: np.ndarray) -> np.ndarray:
        out = np.full((len(x), 10), 0.01, np.float32)
        for row in range(len(x)):
            out[row, 1 if self.count in self.lucky else 0] = 0.91
            self.count += 1
        return out


def test_confirm_rechecks_a_lucky_success_and_goes_on() -> None:
    x0 = np.full(SHAPE, 0.5, np.float32)
    # answer 0 (the start) is lucky; its 3 confirmations (answers 1-3) are not
    oracle = FlakyOracle({0})
    result = SquareAttack(confirm=3)(oracle, x0, 0, 30, seed=0)
    assert result.stop_reason == "budget" and result.queries == 30
    assert len(result.updates) == 1 and result.updates[0].queries == 1  # reported, unconfirmed
    # two of three confirmations are not enough (a majority is a coin flip on the boundary)
    result = SquareAttack(confirm=3)(FlakyOracle({0, 1, 3}), x0, 0, 30, seed=0)
    assert result.stop_reason == "budget" and result.queries == 30
    # all three hold: the attack stops after the start and its three confirmations
    result = SquareAttack(confirm=3)(FlakyOracle({0, 1, 2, 3}), x0, 0, 30, seed=0)
    assert result.stop_reason == "converged" and result.queries == 4
    # the reference's behaviour without confirm: one lucky answer ends the attack
    result = SquareAttack()(FlakyOracle({0}), x0, 0, 30, seed=0)
    assert result.stop_reason == "converged" and result.queries == 1


def test_repeat_averages_log_probabilities() -> None:
    draws = iter([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])

    def predict(x: np.ndarray) -> np.ndarray:
        return np.array([next(draws) for _ in range(len(x))], np.float32)

    oracle = RepeatOracle(FunctionOracle(predict, (1, 1, 1), 3), 2, mean="log-probabilities")
    probs = oracle.scores(np.zeros((1, 1, 1, 1), np.float32))[0]
    assert probs.sum() == pytest.approx(1.0)
    # margins of the answer are the mean log-probability margins of the draws
    expected = (np.log([0.7, 0.2, 0.1]) + np.log([0.1, 0.6, 0.3])) / 2
    np.testing.assert_allclose(np.log(probs) - np.log(probs[0]), expected - expected[0], rtol=1e-5)
    assert get_attack("square").repeat_mean == "log-probabilities"


def test_params_from_the_command_line() -> None:
    params = parse_params(SquareAttack, ["norm=2", "epsilon=1.5", "confirm=3", "remeasure=true"])
    attack = SquareAttack(**params)
    assert (attack.norm, attack.epsilon, attack.confirm, attack.remeasure) == ("2", 1.5, 3, True)
    assert attack.p_init == 0.1
    linf = SquareAttack(**parse_params(SquareAttack, ["norm=inf"]))
    assert (linf.epsilon, linf.p_init) == (0.3, 0.05)
    with pytest.raises(ValueError):
        SquareAttack(norm="1")  # type: ignore[arg-type]
