"""HSJA's parameterizations: ART's (the default, what the SND paper ran) and the authors'.

A synthetic half-space classifier makes every quantity checkable: the probe radius of each
gradient estimate, the bisection threshold, and where the reported candidate lies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks_client.attacks.hsja import HopSkipJump, bisection_threshold, probe_radius
from attacks_client.oracles.base import FunctionOracle

SHAPE = (1, 28, 28)
D = 784


def half_space() -> tuple[FunctionOracle, list[np.ndarray], np.ndarray, np.ndarray, float]:
    """Class 1 where ``w . x > b``, class 0 elsewhere; records every batch it answers."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(D)
    w /= np.linalg.norm(w)
    x0 = np.full(SHAPE, 0.5, np.float32)
    b = float(w @ x0.ravel()) + 0.6  # x0 is 0.6 (L2) inside class 0
    batches: list[np.ndarray] = []

    def predict(x: np.ndarray) -> np.ndarray:
        batches.append(x.copy())
        side = (x.reshape(len(x), -1).astype(np.float64) @ w > b).astype(np.float32)
        return np.stack([1 - side, side], axis=1)

    return FunctionOracle(predict, SHAPE, 2), batches, x0, w, b


def test_art_formulas_for_theta_and_delta() -> None:
    assert bisection_threshold("art", D) == pytest.approx(0.01 / math.sqrt(D))
    assert bisection_threshold("authors", D) == pytest.approx(1.0 / D**1.5)
    assert bisection_threshold("authors", D, gamma=2.0) == pytest.approx(2.0 / D**1.5)
    assert probe_radius(0, D, 1e-3, 5.0) == 0.1  # the first iteration, both references
    theta = bisection_threshold("art", D)
    assert probe_radius(3, D, theta, 2.0) == pytest.approx(0.01 * 2.0)  # sqrt(d)*theta*dist
    assert HopSkipJump().variant == "art" and HopSkipJump().max_iter == 64


@pytest.mark.parametrize("variant", ["art", "authors"])
def test_probe_radius_and_reported_point(variant: str) -> None:
    oracle, batches, x0, w, b = half_space()
    attack = HopSkipJump(variant=variant, max_iter=4, init_num_evals=20)  # type: ignore[arg-type]
    result = attack(oracle, x0, 0, 20_000, seed=0)
    assert result.stop_reason == "converged"
    assert result.queries == oracle.queries == sum(len(x) for x in batches)

    theta = attack.theta(D)
    estimates = [x for x in batches if len(x) > 1]  # the gradient batches, one per iteration
    assert [len(x) for x in estimates] == [int(20 * math.sqrt(t + 1)) for t in range(4)]
    # probes are centre + delta * u with unit u: in 784 dimensions two of them lie
    # delta * sqrt(2) apart (up to 1/sqrt(d))
    radii = []
    for batch in estimates:
        flat = batch.reshape(len(batch), -1).astype(np.float64)
        radii.append(float(np.median(np.linalg.norm(flat[1:] - flat[:-1], axis=1))) / math.sqrt(2))
    assert radii[0] == pytest.approx(0.1, rel=0.05)
    margins = [float(w @ u.candidate.ravel() - b) for u in result.updates]
    assert all(m > 0 for m in margins)  # every reported candidate is adversarial
    iteration_candidates = result.updates[-4:]
    if variant == "art":
        # delta of iteration t = sqrt(d) * theta * dist of the point stepped to in t - 1
        for t in range(1, 4):
            stepped = iteration_candidates[t - 1].l2
            assert radii[t] == pytest.approx(math.sqrt(D) * theta * stepped, rel=0.05)
        # the candidate is the stepped point, well inside the adversarial side: not within
        # a bisection threshold of the boundary
        last = iteration_candidates[-1].candidate
        assert float(w @ last.ravel() - b) > 10 * theta * float(np.linalg.norm(last - x0))
    else:
        # the authors' candidate is the bisected boundary point: within theta (in blend
        # weight) of the boundary; their delta is 8x smaller on 784 pixels
        last = iteration_candidates[-1].candidate
        assert float(w @ last.ravel() - b) <= theta * 2.0 * np.linalg.norm(last - x0) + 1e-6
        assert radii[1] < 0.01 * iteration_candidates[0].l2


def test_stepped_candidate_of_art_survives_noise_better_than_the_boundary_point() -> None:
    """Behind input noise the stepped point keeps its class; the bisected one is a coin flip."""
    oracle, _, x0, w, b = half_space()
    art = HopSkipJump(max_iter=6, init_num_evals=20)(oracle, x0, 0, 20_000, seed=1)
    oracle2, _, _, _, _ = half_space()
    authors = HopSkipJump(variant="authors", max_iter=6, init_num_evals=20)(
        oracle2, x0, 0, 20_000, seed=1
    )
    rng = np.random.default_rng(0)
    sigma = 0.001
    noise = sigma * rng.standard_normal((400, D))

    def kept(candidate: np.ndarray | None) -> float:
        assert candidate is not None
        return float(((candidate.ravel()[None] + noise) @ w > b).mean())

    assert kept(art.final_candidate) > 0.9
    assert kept(authors.final_candidate) < 0.9
