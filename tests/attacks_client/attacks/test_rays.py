"""RayS: the authors' block schedule, fast check, line search and bisection (``RayS_Single.py``),
exact counting, candidates that were answered adversarial, the optimum of a linear classifier,
and the early stop at ε.

A linear two-class model makes the optimum known: class 1 where ``w . x + b > 0``; from x0 the
smallest L∞ step to the boundary is ``|w . x0 + b| / ||w||_1``, along ``-sign(w)`` or
``+sign(w)`` (here ``+``), which lies inside [0, 1] for x0 = 0.5 and a radius below 0.5.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from attacks_client.attacks import get_attack
from attacks_client.attacks.params import parse_params
from attacks_client.attacks.rays import DEFAULT_TOL, HANDOVER_GAIN, RayS, block_schedule, linf
from attacks_client.evaluation.experiment import AttackConfig
from attacks_client.oracles.base import FunctionOracle

SHAPE = (1, 28, 28)
D = 784
OPTIMUM = 0.15  # L∞ distance of x0 to the boundary of the linear model


class Recorder(FunctionOracle):
    """A FunctionOracle that keeps every image it was sent and the label it answered."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], shape: tuple[int, int, int]
    ) -> None:
        super().__init__(predict, shape, 2, scores=False)
        self.images: list[np.ndarray] = []
        self.answers: list[int] = []

    def labels(self, x: np.ndarray) -> np.ndarray:
        labels = super().labels(x)
        self.images.extend(np.array(x, copy=True))
        self.answers.extend(int(label) for label in labels)
        return labels


def linear(w: np.ndarray, optimum: float = OPTIMUM) -> tuple[Recorder, np.ndarray, float]:
    """Class 1 where ``w . x + b > 0``, x0 = 0.5 in class 0 at L∞ distance ``optimum``;
    the oracle, x0 and b."""
    shape = SHAPE if w.size == D else (1, 1, w.size)
    x0 = np.full(shape, 0.5, np.float32)
    b = -float(w @ x0.ravel()) - optimum * float(np.abs(w).sum())

    def predict(x: np.ndarray) -> np.ndarray:
        side = (x.reshape(len(x), -1).astype(np.float64) @ w + b > 0).astype(np.float32)
        return np.stack([1 - side, side], axis=1)

    return Recorder(predict, shape), x0, b


def mostly_negative(seed: int = 0) -> np.ndarray:
    """Weights below zero on ~84% of the pixels: the all-(-1) first ray is adversarial, and the
    optimal ray ``sign(w)`` differs from it on ~16% of the pixels the search must find."""
    return np.random.default_rng(seed).standard_normal(D) - 1.0


def never(x: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), 2), np.float32)
    out[:, 0] = 1.0
    return out


# RayS_Single.py lines 43-56 for dim = 10, read off: block_size = ceil(10 / 2**level), the level
# ends at 2**level blocks or when a block reaches the end
SCHEDULE_10 = [
    (0, 0, 10),
    (1, 0, 5),
    (1, 5, 10),
    (2, 0, 3),
    (2, 3, 6),
    (2, 6, 9),
    (2, 9, 10),
    (3, 0, 2),
    (3, 2, 4),
    (3, 4, 6),
    (3, 6, 8),
    (3, 8, 10),  # end == dim: 5 blocks, not 8
    *[(4, i, i + 1) for i in range(10)],  # ceil(10 / 16) = 1: single pixels
    *[(5, i, i + 1) for i in range(10)],  # and again, level after level
]


def test_block_schedule_is_the_references() -> None:
    assert list(itertools.islice(block_schedule(10), len(SCHEDULE_10))) == SCHEDULE_10
    # 784 pixels: blocks per level and their size until single pixels (level 10)
    per_level: dict[int, list[int]] = {}
    for level, start, end in itertools.islice(block_schedule(D), 3000):
        per_level.setdefault(level, []).append(end - start)
    assert [len(per_level[k]) for k in range(11)] == [1, 2, 4, 8, 16, 32, 61, 112, 196, 392, 784]
    assert per_level[6] == [13] * 60 + [4]  # ceil(784 / 64) = 13, the 61st block ends at 784
    assert per_level[5] == [25] * 31 + [9]
    assert all(sum(sizes) == D for level, sizes in per_level.items() if level <= 11)
    with pytest.raises(ValueError):
        next(block_schedule(0))


def test_each_ray_flips_the_scheduled_block_and_costs_one_query_without_a_hit() -> None:
    # nothing is ever adversarial: sgn stays +1 and each attempt is one line search, whose
    # x0 + d * sgn clips to the same corner for every d >= 1: sent once, not ten times
    shape = (1, 2, 5)
    oracle = Recorder(never, shape)
    x0 = np.full(shape, 0.4, np.float32)
    result = RayS()(oracle, x0, 0, 100, seed=0)
    assert not result.updates
    # levels 0-3 (12 blocks) and one pass over the 10 single pixels; the next pass would send
    # the same 10 images again, so the attack stops there
    assert result.stop_reason == "converged"
    assert result.queries == oracle.queries == len(oracle.images) == 12 + 10
    schedule = itertools.islice(block_schedule(10), 22)
    for image, (_, start, end) in zip(oracle.images, schedule, strict=True):
        expected = np.ones(10, np.float32)
        expected[start:end] = 0.0  # the flipped block goes to the 0 corner, the rest to 1
        np.testing.assert_array_equal(image.ravel(), expected)


def test_first_ray_then_fast_checks_cost_what_the_reference_spends() -> None:
    # w = -1 everywhere: the first ray (all -1) is the optimum, every later flip is worse
    oracle, x0, _ = linear(-np.ones(D))
    result = RayS()(oracle, x0, 0, 400, seed=0)
    assert result.queries == oracle.queries == len(oracle.images) == 400
    # lin_search hits at d = 1 (one query), d_end = 1 * ||sgn|| = 28, bisection to 1e-3:
    # ceil(log2(28 / 1e-3)) = 15 probes, the first of which (d = 14: x0 - 0.5 = the 0 corner)
    # is the image lin_search had answered adversarial: not asked again
    bisection = math.ceil(math.log2(math.sqrt(D) / DEFAULT_TOL)) - 1
    assert bisection == 14
    assert len(result.updates) == 1 and result.updates[0].queries == 1 + bisection
    assert linf(result.updates[0].candidate, x0) == pytest.approx(OPTIMUM, abs=1e-4)
    # afterwards each ray is one fast check at the incumbent radius d_t along the new ray
    d_t = linf(result.updates[0].candidate, x0) * math.sqrt(D)
    schedule = block_schedule(D)
    next(schedule)  # the first ray
    for image, answer, (_, start, end) in zip(
        oracle.images[1 + bisection :], oracle.answers[1 + bisection :], schedule, strict=False
    ):
        sgn = -np.ones(D, np.float32)
        sgn[start:end] = 1.0
        np.testing.assert_allclose(image.ravel(), 0.5 + d_t * sgn / math.sqrt(D), atol=1e-4)
        assert answer == 0


def test_reaches_the_linear_optimum_and_the_distance_only_shrinks() -> None:
    w = mostly_negative()
    oracle, x0, b = linear(w)
    optimum = abs(float(w @ x0.ravel()) + b) / float(np.abs(w).sum())  # |w.x0 + b| / ||w||_1
    assert optimum == pytest.approx(OPTIMUM)
    result = RayS()(oracle, x0, 0, 5000, seed=0)
    assert result.queries == oracle.queries <= 5000
    distances = [linf(u.candidate, x0) for u in result.updates]
    assert len(distances) > 20
    assert all(later < earlier for earlier, later in itertools.pairwise(distances))
    assert distances[0] > 1.1 * optimum  # the first ray (all -1) is not the optimum
    assert distances[-1] == pytest.approx(optimum, rel=2e-3)
    assert distances[-1] >= optimum - 1e-6  # never closer than the boundary
    halfway = next(u for u in result.updates if u.queries > 1000)
    assert linf(halfway.candidate, x0) > distances[-1]  # more queries, smaller distance
    # the ray found is (almost) sign(w), the optimal one
    found = np.sign(result.updates[-1].candidate.ravel() - 0.5)
    assert np.mean(found == np.sign(w)) > 0.97


def test_candidates_are_images_answered_adversarial() -> None:
    oracle, x0, _ = linear(mostly_negative(1))
    result = RayS()(oracle, x0, 0, 1500, seed=0)
    assert result.updates
    for update in result.updates:
        sent = [
            i
            for i, image in enumerate(oracle.images[: update.queries])
            if np.array_equal(image, update.candidate)
        ]
        assert sent and any(oracle.answers[i] == 1 for i in sent)  # paid for, never re-asked
    assert len({image.tobytes() for image in oracle.images}) == len(oracle.images)


def test_a_bisection_cut_by_the_budget_keeps_its_closest_hit() -> None:
    oracle, x0, _ = linear(-np.ones(D))
    result = RayS()(oracle, x0, 0, 10, seed=0)
    assert result.stop_reason == "budget" and result.queries == 10
    assert len(result.updates) == 1 and result.updates[0].queries == 10
    candidate = result.updates[0].candidate
    assert 0.15 < linf(candidate, x0) < 0.5  # better than the corner, not yet the boundary
    hits = [img for img, a in zip(oracle.images, oracle.answers, strict=True) if a == 1]
    assert min(linf(img, x0) for img in hits) == linf(candidate, x0)


@pytest.mark.parametrize("epsilon", [0.3, 0.2, 0.16])
def test_early_stop_once_within_epsilon(epsilon: float) -> None:
    oracle, x0, _ = linear(mostly_negative())
    result = RayS(epsilon=epsilon)(oracle, x0, 0, 20_000, seed=0)
    assert result.stop_reason == "converged" and result.queries == oracle.queries < 20_000
    distances = [linf(u.candidate, x0) for u in result.updates]
    assert distances[-1] <= epsilon
    assert all(d > epsilon for d in distances[:-1])  # it stopped at the first block within ε
    # ... right after that block's bisection, not one query later
    assert result.updates[-1].queries == result.queries
    # and without ε the attack takes the same path and goes on
    plain = RayS()(linear(mostly_negative())[0], x0, 0, 20_000, seed=0)
    assert plain.queries > result.queries
    assert [u.queries for u in plain.updates[: len(result.updates)]] == [
        u.queries for u in result.updates
    ]


def test_early_stop_in_l2_is_the_references_order_2() -> None:
    oracle, x0, _ = linear(mostly_negative())
    result = RayS(norm="2", epsilon=4.5)(oracle, x0, 0, 20_000, seed=0)
    assert result.stop_reason == "converged"
    assert result.final_l2 <= 4.5 < result.updates[-2].l2


def test_params_and_the_grid_row() -> None:
    assert get_attack("rays") is RayS and not RayS.needs_scores
    assert RayS().params() == {"norm": "inf", "epsilon": None, "tol": DEFAULT_TOL, "confirm": 0}
    params = parse_params(RayS, ["norm=inf", "epsilon=0.1", "tol=0.01", "confirm=3"])
    assert params == {"norm": "inf", "epsilon": 0.1, "tol": 0.01, "confirm": 3}
    assert RayS(**params).params() == params
    assert RayS(norm="Linf").norm == "inf"  # type: ignore[arg-type]
    row = AttackConfig.from_dict(
        {"name": "rays", "norm": "linf", "params": {"norm": "inf", "epsilon": 0.2}}
    )
    assert RayS(**row.params).epsilon == 0.2
    for bad in ({"norm": "1"}, {"epsilon": 0.0}, {"tol": 0.0}, {"confirm": -1}):
        with pytest.raises(ValueError):
            RayS(**bad)  # type: ignore[arg-type]


def test_targeted_stops_on_the_target() -> None:
    # three classes; class 2 wins towards the 0 corner, x0 is class 0 or 1
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((3, D)) / 28.0
    weights[2] -= 1.0 / 28.0
    bias = np.array([0.0, 0.0, 10.0])
    x0 = np.full(SHAPE, 0.5, np.float32)

    def predict(x: np.ndarray) -> np.ndarray:
        logits = x.reshape(len(x), -1).astype(np.float64) @ weights.T + bias
        return np.eye(3, dtype=np.float32)[logits.argmax(1)]

    label = int(predict(x0[None]).argmax())
    target = 2
    assert label != target
    oracle = FunctionOracle(predict, SHAPE, 3, scores=False)
    result = RayS()(oracle, x0, label, 2000, target=target, seed=0)
    assert result.updates and result.queries == oracle.queries
    for update in result.updates:
        assert predict(update.candidate[None]).argmax() == target


# -- confirm: the noise-aware handover ------------------------------------------------------------

WIDTH = 0.004  # L∞ scale of the noisy boundary: P(class 1) = sigmoid(signed L∞ margin / WIDTH)


def noisy_linear(seed: int) -> tuple[Recorder, np.ndarray, Callable[[np.ndarray], float]]:
    """The linear model of ``mostly_negative`` answering class 1 with a known sigmoid
    probability of the signed L∞ distance to its boundary; the oracle, x0 and P(adversarial)."""
    w = mostly_negative()
    x0 = np.full(SHAPE, 0.5, np.float32)
    b = -float(w @ x0.ravel()) - OPTIMUM * float(np.abs(w).sum())
    rng = np.random.default_rng(seed)

    def p_adv(x: np.ndarray) -> float:
        margin = (float(w @ x.ravel().astype(np.float64)) + b) / float(np.abs(w).sum())
        return 1.0 / (1.0 + math.exp(-margin / WIDTH))

    def predict(x: np.ndarray) -> np.ndarray:
        side = np.array([rng.random() < p_adv(row) for row in x], np.float32)
        return np.stack([1 - side, side], axis=1)

    return Recorder(predict, SHAPE), x0, p_adv


def test_confirm_hands_over_points_the_noise_calls_adversarial_and_the_plain_attack_does_not() -> (
    None
):
    plain, confirmed = [], []
    for seed in range(4):
        oracle, x0, p_adv = noisy_linear(seed)
        result = RayS()(oracle, x0, 0, 3000, seed=seed)
        assert result.final_candidate is not None
        plain.append(p_adv(result.final_candidate))
        oracle, x0, p_adv = noisy_linear(seed)
        result = RayS(confirm=3)(oracle, x0, 0, 3000, seed=seed)
        assert result.queries == oracle.queries <= 3000 and result.final_candidate is not None
        confirmed.append(p_adv(result.final_candidate))
    # the plain bisection ends where one draw said adversarial, and the smallest radius over
    # many rays is a lucky one: measured P(adversarial) about 0.01; confirmed points hold
    # (measured 0.54-0.84 with k = 3, 0.73-0.96 with k = 5)
    assert np.median(plain) < 0.1
    assert np.median(confirmed) > 0.6 and min(confirmed) > 0.5


def test_a_confirmed_point_was_answered_adversarial_k_more_times_in_one_request() -> None:
    oracle, x0, _ = noisy_linear(0)
    result = RayS(confirm=3)(oracle, x0, 0, 1500, seed=0)
    assert result.updates
    for update in result.updates:
        sent = [
            i
            for i, image in enumerate(oracle.images[: update.queries])
            if np.array_equal(image, update.candidate)
        ]
        # the last three answers before the update, in one request (and maybe a bisection's)
        assert sent[-3:] == list(range(update.queries - 3, update.queries))
        assert all(oracle.answers[i] == 1 for i in sent[-3:])


def test_confirm_reaches_the_optimum_of_a_deterministic_model_too() -> None:
    oracle, x0, _ = linear(mostly_negative())
    result = RayS(confirm=3)(oracle, x0, 0, 8000, seed=0)
    # a quiet pass does not end it (the oracle is taken to be noisy): the budget does
    assert result.stop_reason == "budget" and result.queries == 8000
    assert RayS()(linear(mostly_negative())[0], x0, 0, 8000, seed=0).stop_reason == "converged"
    # handed over once d_t shrinks by HANDOVER_GAIN: within that of the optimum
    assert result.final_candidate is not None
    assert OPTIMUM - 1e-6 <= linf(result.final_candidate, x0) <= OPTIMUM * (1 + HANDOVER_GAIN)
    distances = [linf(u.candidate, x0) for u in result.updates]
    assert all(later < earlier for earlier, later in itertools.pairwise(distances))
