"""PopSkipJump on synthetic half-spaces whose answers flip with a known sigmoid probability.

Checked against numbers computed here: the info-max search against a majority-vote bisection
at equal accuracy, the gradient queries of every iteration from the paper's closed form, the
reported points' probability of being adversarial against the boundary points', HSJA's
progress on a deterministic half-space, and the budget and counting.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import attacks_client.attacks.popskip as popskip
from attacks_client.attacks._geometry import blend_search
from attacks_client.attacks._infomax import Estimate, SigmoidModel, search_grid
from attacks_client.attacks.base import AttackOracle
from attacks_client.attacks.hsja import HopSkipJump
from attacks_client.attacks.params import parse_params
from attacks_client.attacks.popskip import PopSkipJump, default_grid_size, segment_search
from attacks_client.oracles.base import FunctionOracle
from attacks_client.oracles.repeat import RepeatOracle

SHAPE = (1, 28, 28)
D = 784
MARGIN = 0.6  # x0 lies 0.6 (L2) inside class 0
NORMAL = np.random.default_rng(99).standard_normal(D)
NORMAL /= np.linalg.norm(NORMAL)


class HalfSpace:
    """Class 1 beyond ``w . x = b``; with ``noise`` > 0 an answer is adversarial with
    probability ``1 / (1 + exp(-1.7 (w . x - b) / noise))`` (a seeded Generator draws it)."""

    def __init__(self, noise: float = 0.0, seed: int = 0, margin: float = MARGIN) -> None:
        self.w = NORMAL
        self.x0 = np.full(SHAPE, 0.5, np.float32)
        self.b = float(self.w @ self.x0.ravel()) + margin
        self.noise = noise
        self.draws = np.random.default_rng(seed)
        self.batches: list[int] = []

    def margin(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64) @ self.w - self.b

    def p_adversarial(self, x: np.ndarray) -> np.ndarray:
        if self.noise == 0:
            return (self.margin(x) > 0).astype(np.float64)
        return np.asarray(1.0 / (1.0 + np.exp(-1.7 * self.margin(x) / self.noise)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        adversarial = self.draws.random(len(x)) < self.p_adversarial(x)
        return np.stack([~adversarial, adversarial], axis=1).astype(np.float32)

    def oracle(self) -> FunctionOracle:
        return FunctionOracle(self.predict, SHAPE, 2)


def recorded_searches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Estimate, np.ndarray]]:
    """Every search the attack runs: its estimate and the segment's far end."""
    searches: list[tuple[Estimate, np.ndarray]] = []
    search: Callable[..., Any] = popskip.segment_search

    def recording(
        oracle: AttackOracle, rng: np.random.Generator, far: np.ndarray, *a: Any, **k: Any
    ) -> Any:
        estimate, posterior = search(oracle, rng, far, *a, **k)
        searches.append((estimate, far.copy()))
        return estimate, posterior

    monkeypatch.setattr(popskip, "segment_search", recording)
    return searches


def test_info_max_finds_a_noisy_boundary_in_fewer_queries_than_majority_votes() -> None:
    """Segment from x0 to 2 * w beyond it; the boundary at 1.213, i.e. x* = 1 - 1.213 / 2 in
    the search's blend weight; answers a sigmoid of inverse scale 10 in x (PSJA's units).
    Info-max reaches |t - x*| <= 0.02 in most of 40 runs (about 95 %, 60 queries); a bisection
    that asks every point T times and votes (``RepeatOracle`` under HSJA's ``blend_search``,
    its rate measured over 120 runs) needs T of about 23 for the same rate (160 queries); with
    the votes 1.5 x info-max's queries afford (T = 11 or 13) it falls short."""
    length, cut, tol, runs = 2.0, 1.213, 0.02, 40
    x_star = 1.0 - cut / length
    noise = 1.7 * length / (4 * 10.0)  # 1.7 m / noise = 4 s (1 - x) L: s = 10

    def segment(seed: int) -> tuple[FunctionOracle, np.ndarray, np.ndarray]:
        space = HalfSpace(noise, seed=seed, margin=cut)
        far = (space.x0.ravel() + length * space.w).reshape(SHAPE).astype(np.float32)
        return space.oracle(), space.x0, far

    model = SigmoidModel(search_grid(100))
    errors, spent = [], []
    for seed in range(runs):
        oracle, x0, far = segment(seed)
        tracked = AttackOracle(oracle, x0, 0, 10**6)
        estimate, _ = segment_search(
            tracked, np.random.default_rng(seed), far, model, target_cos=0.17
        )
        errors.append(abs(estimate.t - x_star))
        spent.append(tracked.queries)
    info_max_rate, info_max_queries = np.mean(np.array(errors) <= tol), np.mean(spent)
    assert info_max_rate >= 0.85

    # the most votes per point a bisection can afford within 1.5 x info-max's queries (its
    # steps to tol / 2 are a fixed number): it still misses info-max's accuracy
    steps = math.ceil(math.log2(2 / tol))
    repeats = int(1.5 * info_max_queries / steps)
    repeats -= 1 - repeats % 2  # odd: no tied votes
    errors, spent = [], []
    for seed in range(120):
        oracle, x0, far = segment(1000 + seed)
        tracked = AttackOracle(RepeatOracle(oracle, repeats), x0, 0, 10**7)
        found = blend_search(tracked, far, tol / 2)
        errors.append(abs(1.0 - float(np.linalg.norm(found - x0)) / length - x_star))
        spent.append(tracked.queries)
    assert np.mean(spent) <= 1.5 * info_max_queries, (repeats, np.mean(spent), info_max_queries)
    assert np.mean(np.array(errors) <= tol) < info_max_rate, repeats


def test_each_gradient_takes_the_queries_its_search_called_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """n_t = n_det (alpha_det / alpha)^2: HSJA's n_det = 100 sqrt(t) (100 after the first
    search), alpha_det = sqrt(2 / pi) e^{-1/2}, alpha the ramp's for the searched s and eps at
    theta = 1 / grid, delta = sqrt(d) / grid (get_cos_from_n, then get_n_from_cos)."""
    searches = recorded_searches(monkeypatch)
    space = HalfSpace(noise=0.05, seed=5)
    result = PopSkipJump(num_iterations=4)(space.oracle(), space.x0, 0, 10**6, seed=0)
    assert result.stop_reason == "converged" and len(searches) == 5

    gradients: list[int] = []  # consecutive requests of more than one image: one estimate
    previous = 1
    for size in space.batches:
        if size > 1:
            gradients[-1:] = [gradients[-1] + size] if previous > 1 else gradients[-1:] + [size]
        previous = size
    alpha_det = math.sqrt(2 / math.pi) * math.exp(-0.5)
    grid = 100
    expected = []
    for step, (estimate, _) in enumerate(searches[:-1], start=1):
        n_det = 100 if step == 1 else int(100 * math.sqrt(step))
        s_, half = estimate.s / grid, grid / (2 * estimate.s)
        ramp = s_ * (math.erf((1 + half) / math.sqrt(2)) - math.erf((1 - half) / math.sqrt(2)))
        a = (1 - 2 * estimate.eps) * ramp
        expected.append(int(min(n_det * alpha_det**2 / a**2, 50_000)))
    assert len(gradients) == 4
    assert gradients == pytest.approx(expected, abs=1)
    assert max(expected) > 300  # the noise asks for more than HSJA's 100 sqrt(t)


def test_reported_points_lie_past_the_boundary_the_search_found(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The boundary point (t) is a coin flip; the reported point, 0.9 into the adversarial
    side by the posterior, is adversarial in most answers (what a 10-draw majority needs)."""
    searches = recorded_searches(monkeypatch)
    space = HalfSpace(noise=0.05, seed=5)
    result = PopSkipJump(num_iterations=6)(space.oracle(), space.x0, 0, 10**6, seed=0)
    x0 = space.x0
    boundary = [(1 - e.t) * far + e.t * x0 for e, far in searches]
    at_boundary = space.p_adversarial(np.stack(boundary))
    reported = space.p_adversarial(np.stack([u.candidate for u in result.updates[1:]]))
    # the noisy start may itself be a coin flip: then nothing on its segment is confidently
    # adversarial and the first search reports nothing
    assert len(searches) == 7 and len(reported) >= 6
    assert 0.3 < at_boundary.mean() < 0.7
    assert reported.min() > 0.6 and reported.mean() > 0.8
    assert result.final_l2 < 0.25 * result.updates[0].l2


def test_a_deterministic_half_space_is_attacked_like_hsja() -> None:
    """Without noise PSJA's sigmoid is a step (s at the grid's top) and its n HSJA's."""
    space = HalfSpace()
    result = PopSkipJump(num_iterations=8)(space.oracle(), space.x0, 0, 50_000, seed=0)
    hsja = HopSkipJump(max_iter=8)(HalfSpace().oracle(), space.x0, 0, 50_000, seed=0)
    assert result.stop_reason == "converged"
    margins = [float(space.margin(u.candidate[None])[0]) for u in result.updates]
    assert all(m > 0 for m in margins)  # every reported point is adversarial
    assert result.final_l2 < 0.15 * result.updates[0].l2
    assert result.final_l2 < 1.6 * MARGIN and result.final_l2 <= 1.2 * hsja.final_l2


def test_budget_bounds_and_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first search asks for more gradient queries than the budget leaves: the estimate
    takes what is left after as many queries as that search took, and the next search spends
    the rest, one query at a time (no batch is refused for its size)."""
    searches = recorded_searches(monkeypatch)
    space = HalfSpace(noise=0.05, seed=3)
    oracle = space.oracle()
    result = PopSkipJump()(oracle, space.x0, 0, 3000, seed=1)
    assert result.stop_reason == "budget"
    assert result.queries == oracle.queries == sum(space.batches) == 3000
    assert len(result.query_l2) == result.queries
    first = searches[0][0]
    gradient = next(i for i, size in enumerate(space.batches) if size > 1)
    before = sum(space.batches[:gradient])
    assert first.n > 3000 - before
    assert space.batches[gradient] == 3000 - before - first.queries
    assert result.updates and result.final_candidate is not None
    for update in result.updates:
        assert update.candidate.min() >= 0.0 and update.candidate.max() <= 1.0
    assert [u.queries for u in result.updates] == sorted(u.queries for u in result.updates)


def test_hyperparameters_and_defaults() -> None:
    attack = PopSkipJump()
    assert attack.params() == {
        "num_iterations": 32,
        "initial_num_evals": 100,
        "max_num_evals": 50_000,
        "grid_size": None,
        "prior_frac": 1.0,
        "queries_per_step": 1,
        "max_search_steps": 5000,
        "batch_size": 256,
        "init_size": 100,
        "fallback": True,
        "report_level": 0.9,
        "max_halvings": 5,
    }
    assert default_grid_size(28 * 28) == 100 and default_grid_size(3 * 32 * 32) == 300
    parsed = parse_params(PopSkipJump, ["grid_size=50", "prior_frac=0", "report_level=0.8"])
    assert parsed == {"grid_size": 50, "prior_frac": 0.0, "report_level": 0.8}
    assert parse_params(PopSkipJump, ["grid_size=none"]) == {"grid_size": None}
    schedule = PopSkipJump(prior_frac=0)
    assert [schedule._prior_frac(t) for t in (1, 2, 4, 5, 10, 11, 32)] == [
        1.0,
        0.5,
        0.5,
        0.2,
        0.2,
        0.1,
        0.1,
    ]
    with pytest.raises(ValueError):
        PopSkipJump(report_level=0.4)


def test_an_offered_start_is_checked_once_and_searched_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reference's experiments start from a natural image of another class: an offered
    start costs one query (counted) and is the first search's far end; one that is not
    adversarial is dropped for the noise search."""
    searches = recorded_searches(monkeypatch)
    space = HalfSpace()
    start = np.clip(space.x0 + 1.5 * NORMAL.reshape(SHAPE), 0, 1).astype(np.float32)
    assert space.margin(start[None])[0] > 0
    result = PopSkipJump(num_iterations=1)(space.oracle(), space.x0, 0, 50_000, seed=0, start=start)
    assert space.batches[0] == 1 and result.updates[0].queries == 1  # the check, then reported
    np.testing.assert_array_equal(result.updates[0].candidate, start)
    np.testing.assert_array_equal(searches[0][1], start)

    searches.clear()
    space = HalfSpace()
    inside = np.clip(space.x0 - 0.5 * NORMAL.reshape(SHAPE), 0, 1).astype(np.float32)
    result = PopSkipJump(num_iterations=1)(
        space.oracle(), space.x0, 0, 50_000, seed=0, start=inside
    )
    assert not np.array_equal(searches[0][1], inside)  # a noise start instead
    assert result.updates[0].queries > 1 and sum(space.batches) == result.queries
    with pytest.raises(ValueError, match="start"):
        PopSkipJump()(space.oracle(), space.x0, 0, 100, start=np.zeros((1, 2, 2), np.float32))


def test_a_step_off_the_adversarial_side_is_halved(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first gradient pointing into the true class sends the far end there (the search puts
    the boundary at t = 0); the step is halved until the far end is adversarial again. With
    ``max_halvings=0`` (the reference) the boundary point becomes that far end, on the wrong
    side."""
    wrong = -NORMAL.reshape(SHAPE).astype(np.float32)
    gradient = PopSkipJump._gradient
    calls: list[int] = []

    def first_wrong(self: PopSkipJump, *args: Any) -> np.ndarray:
        calls.append(1)
        return wrong if len(calls) == 1 else gradient(self, *args)

    monkeypatch.setattr(PopSkipJump, "_gradient", first_wrong)
    for halvings in (5, 0):
        searches = recorded_searches(monkeypatch)
        calls.clear()
        space = HalfSpace()
        start = np.clip(space.x0 + 1.5 * NORMAL.reshape(SHAPE), 0, 1).astype(np.float32)
        PopSkipJump(num_iterations=1, max_halvings=halvings)(
            space.oracle(), space.x0, 0, 50_000, seed=0, start=start
        )
        ts = [estimate.t for estimate, _ in searches]
        fars = np.stack([far for _, far in searches])
        assert ts[1] == 0.0 and space.margin(fars[1:2])[0] < 0  # stepped into class 0
        if halvings:
            # the boundary point lies ~MARGIN from x0: margin(far) = MARGIN / 2 - 1.5 h, so
            # the step h = MARGIN is halved until h < MARGIN / 3, then the far end is adversarial
            assert ts[-1] > 0 and space.margin(fars[-1:])[0] > 0 and 2 < len(ts) <= 7
        else:
            assert len(ts) == 2
