"""PopSkipJump's info-max bisection against the paper's equations, computed here by hand: the
sigmoid likelihood, Bayes' rule and the information gain on a tiny grid, the expected-cosine
formulas in closed form (and the ramp's alpha by Monte Carlo), the grids and the stop rule."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

from attacks_client.attacks._infomax import (
    Estimate,
    Grid,
    SigmoidModel,
    SigmoidPosterior,
    alpha,
    cos_from_n,
    info_max_search,
    n_from_cos,
    p_true,
    search_grid,
)

D = 784


def entropy(p: float) -> float:
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0)


def test_the_likelihood_is_the_references_sigmoid() -> None:
    """eps + (1 - 2 eps) / (1 + exp(-4 s (x - t))): P(true label) = 1/2 at t, rising to x0."""
    for x, t, s, e in [(0.3, 0.5, 2.0, 0.1), (0.9, 0.2, 0.5, 0.0), (0.5, 0.5, 10.0, 0.3)]:
        expected = e + (1 - 2 * e) / (1 + math.exp(-4 * s * (x - t)))
        assert float(p_true(x, t, s, e)) == pytest.approx(expected, rel=1e-12)
    assert float(p_true(0.42, 0.42, 7.0, 0.2)) == 0.5
    xs = np.linspace(0, 1, 11)
    assert np.all(np.diff(p_true(xs, 0.4, 3.0, 0.1)) > 0)


def test_bayes_rule_and_information_gain_on_a_tiny_grid_by_hand() -> None:
    grid = Grid((0.25, 0.75, 2), (0.0, 1.0, 2), (0.0, 0.2, 2), grid_size=4)  # x: 0, .25, ... 1
    hypotheses = list(itertools.product([0.25, 0.75], [1.0, 10.0], [0.0, 0.2]))  # (t, s, eps)

    def p1(x: float, t: float, s: float, e: float) -> float:
        return e + (1 - 2 * e) * (0.5 * math.tanh(2 * s * (x - t)) + 0.5)

    posterior = SigmoidPosterior(SigmoidModel(grid))
    assert np.allclose(posterior.weights, 1 / 8)
    observations = [(2, True), (1, False), (3, True)]  # (index into x, answered true label)
    for index, y in observations:
        posterior.update(np.array([index]), np.array([y]))
    xs = [0.0, 0.25, 0.5, 0.75, 1.0]
    unnormalized = []
    for h in hypotheses:
        weight = 1 / 8
        for index, y in observations:
            p = p1(xs[index], *h)
            weight *= p if y else 1 - p
        unnormalized.append(weight)
    by_hand = np.array(unnormalized) / sum(unnormalized)
    assert posterior.weights == pytest.approx(by_hand, rel=1e-6)

    gain = posterior.information_gain()
    for j, x in enumerate(xs):
        predictive = sum(w * p1(x, *h) for w, h in zip(by_hand, hypotheses, strict=True))
        expected = sum(w * entropy(p1(x, *h)) for w, h in zip(by_hand, hypotheses, strict=True))
        assert gain[j] == pytest.approx(entropy(predictive) - expected, rel=1e-5, abs=1e-7)
    assert posterior.map_estimate() == hypotheses[int(np.argmax(by_hand))]

    # noise-free adversarial-side probability: posterior mean of 1 - sigma(s (x - t))
    side = sum(
        w * (1 - p1(0.4, t, s, 0.0)) for w, (t, s, _) in zip(by_hand, hypotheses, strict=True)
    )
    assert posterior.adversarial_probability(0.4) == pytest.approx(side, rel=1e-6)

    posterior.weights = np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    posterior.clamp()  # the reference floors the posterior at 1e-7 before every step
    assert posterior.weights[1] == pytest.approx(1e-7 / (1 + 7e-7))


def test_the_expected_cosine_follows_its_closed_form() -> None:
    # HSJA's target: n = 100 queries at theta = d^{-3/2}, delta = sqrt(d) theta, step classifier
    theta = 1 / D**1.5
    target = cos_from_n(100, s=math.inf, theta=theta, delta=theta * math.sqrt(D), d=D)
    alpha_det = math.sqrt(2 / math.pi) * math.exp(-0.5)  # theta / (delta / sqrt(d)) = 1
    assert target == pytest.approx(1 / math.sqrt(1 + (D - 1) / (100 * alpha_det**2)), rel=1e-12)
    assert target == pytest.approx(0.1704, abs=1e-4)

    # PSJA's gradient: delta = sqrt(d) / 100, theta = 1 / 100, s = 10, eps = 0.1
    s_, th = 10 * 0.01, 1.0  # s delta / sqrt(d), theta sqrt(d) / delta
    a = (
        0.8
        * s_
        * (
            math.erf((th + 1 / (2 * s_)) / math.sqrt(2))
            - math.erf((th - 1 / (2 * s_)) / math.sqrt(2))
        )
    )
    args: dict[str, Any] = {"s": 10.0, "theta": 0.01, "delta": math.sqrt(D) / 100, "eps": 0.1}
    assert alpha(10.0, 0.01, math.sqrt(D) / 100, D, 0.1) == pytest.approx(a, rel=1e-12)
    n = n_from_cos(target, d=D, **args)
    assert n == pytest.approx((D - 1) * target**2 / (a**2 * (1 - target**2)), rel=1e-12)
    assert n == pytest.approx(100 * alpha_det**2 / a**2, rel=1e-9)  # n_det (alpha_det/alpha)^2
    assert cos_from_n(n, d=D, **args) == pytest.approx(target, rel=1e-12)  # the inverse
    # a step (s -> inf) needs HSJA's own 100
    assert n_from_cos(target, s=1e9, theta=0.01, delta=math.sqrt(D) / 100, d=D) == pytest.approx(
        100, rel=1e-6
    )
    assert n_from_cos(target, s=1.0, theta=0.01, delta=math.sqrt(D) / 100, d=D, eps=0.5) == (
        math.inf
    )


def test_alpha_is_the_ramp_expectation_by_monte_carlo() -> None:
    """alpha = E[(2 p(Z) - 1) Z], Z ~ N(0, 1), p the ramp of slope s' centred theta'."""
    z = np.random.default_rng(0).standard_normal(2_000_000)
    for s_, th in [(0.5, 0.3), (2.0, -0.7), (0.1, 1.0)]:
        ramp = np.clip(0.5 + s_ * (z - th), 0.0, 1.0)
        mc = float(np.mean((2 * ramp - 1) * z))
        # alpha(s, theta, delta, d, 0) with delta = sqrt(d): s' = s, theta' = theta
        assert alpha(s_, th, 3.0, 9, 0.0) == pytest.approx(mc, abs=3e-3)


def test_the_grids_of_bin_search() -> None:
    first = search_grid(100)
    assert first.t == pytest.approx(np.linspace(0, 1, 101))
    assert first.s == pytest.approx(np.logspace(-1, 2, 31))
    assert first.eps == pytest.approx(np.linspace(0, 0.3, 7))
    assert first.x == pytest.approx(np.linspace(0, 1, 101))
    assert first.tolerance == pytest.approx((1 / 101, 3 / 31, 0.3 / 7))

    previous = Estimate(t=0.4, s=10.0, eps=0.05, n=100.0, queries=30, converged=True)
    later = search_grid(100, previous)  # prior_frac 1: t twice as fine, s in full, eps fixed
    assert later.t == pytest.approx(np.linspace(0, 1, 201))
    assert later.s == pytest.approx(np.logspace(-1, 2, 31))
    assert later.eps == pytest.approx([0.05])
    narrow = search_grid(100, previous, prior_frac=0.1)
    assert narrow.t == pytest.approx(np.linspace(0.3, 0.5, 21))
    assert narrow.s == pytest.approx(np.logspace(0.7, 1.3, 4))


def test_the_search_stops_when_its_estimate_stands_still() -> None:
    """A step classifier at x = 0.372: the MAP settles next to it; the stop rule needs 11
    standing estimates (10 moves of zero); one request per step."""
    sizes: list[int] = []

    def ask(xs: np.ndarray) -> np.ndarray:
        sizes.append(len(xs))
        return np.asarray(xs > 0.372)

    model = SigmoidModel(search_grid(100))
    estimate, posterior = info_max_search(
        ask, np.random.default_rng(0), model, target_cos=0.17, d=D
    )
    assert estimate.converged and estimate.queries == len(sizes) >= 11
    assert set(sizes) == {1}
    assert (
        abs(estimate.t - 0.372) <= 0.01 and estimate.s == pytest.approx(100) and estimate.eps == 0
    )
    expected_n = n_from_cos(0.17, s=100, theta=0.01, delta=math.sqrt(D) / 100, d=D)
    assert estimate.n == pytest.approx(expected_n)
    level = posterior.last_confident(0.9)
    assert level is not None and level < 0.372  # past the boundary, on the adversarial side

    sizes.clear()
    estimate, _ = info_max_search(
        ask, np.random.default_rng(0), model, target_cos=0.17, d=D, queries_per_step=3
    )
    assert sizes[:6] == [1, 1, 2, 2, 3, 3] and set(sizes[6:]) <= {3}  # min(k // 2 + 1, 3)
    assert estimate.queries == sum(sizes)
