"""Boundary Attack, L2, decision-based.

Brendel, Rauber, Bethge: "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018 (arXiv:1712.04248). Reference code: ART's
``BoundaryAttack`` (``art/attacks/evasion/boundary.py``), which the SND paper used with its
default parameters (App. B.1); see also foolbox's ``BoundaryAttack``.

From an adversarial start (uniform noise, as in ART), each iteration

1. draws ``sample_size`` orthogonal (spherical) steps of relative size ``delta`` around the
   current point, sent as one batch, retried up to ``num_trial`` times until one stays
   adversarial; ``delta`` adapts to the success rate (< 0.2: shrink, > 0.5: grow, by
   ``step_adapt``);
2. moves every surviving candidate a fraction ``epsilon`` towards x0 (one batch), retried
   likewise, adapting ``epsilon``; the closest adversarial result is the new point.

Every query counts, the initial noise draws included.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from attacks_client.attacks._geometry import blend_search, clip01, uniform_noise_init
from attacks_client.attacks.base import Attack, AttackOracle

log = logging.getLogger(__name__)


class BoundaryAttack(Attack):
    """Boundary Attack (l2, untargeted, or targeted via ``oracle.target``)."""

    name: ClassVar[str] = "boundary"

    def __init__(
        self,
        max_iter: int = 5000,
        delta: float = 0.01,
        epsilon: float = 0.01,
        step_adapt: float = 0.667,
        num_trial: int = 25,
        sample_size: int = 20,
        init_size: int = 100,
        min_epsilon: float = 0.0,
        init_blend_search: bool = False,
    ) -> None:
        if not 0 < step_adapt < 1:
            raise ValueError("step_adapt must lie in (0, 1)")
        if delta <= 0 or epsilon <= 0 or min(num_trial, sample_size, init_size) < 1:
            raise ValueError("delta, epsilon, num_trial, sample_size, init_size must be positive")
        self.max_iter = max_iter
        self.delta = delta
        self.epsilon = epsilon
        self.step_adapt = step_adapt
        self.num_trial = num_trial
        self.sample_size = sample_size
        self.init_size = init_size
        self.min_epsilon = min_epsilon
        self.init_blend_search = init_blend_search

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0 = oracle.x0
        x_adv = uniform_noise_init(oracle, rng, self.init_size)
        if x_adv is None:
            return
        oracle.report(x_adv)
        if self.init_blend_search:  # foolbox-style start; ART starts from the raw noise
            x_adv = blend_search(oracle, x_adv, 0.001)
            oracle.report(x_adv)
        delta, epsilon = self.delta, self.epsilon

        for _ in range(self.max_iter):
            # 1. orthogonal step, trust region on delta
            for _ in range(self.num_trial):
                candidates = clip01(
                    x_adv[None] + self._orthogonal_perturb(rng, delta, x_adv, x0, self.sample_size)
                )
                satisfied = oracle.is_adversarial(candidates)
                ratio = float(satisfied.mean())
                if ratio < 0.2:
                    delta *= self.step_adapt
                elif ratio > 0.5:
                    delta /= self.step_adapt
                if ratio > 0:
                    survivors = candidates[satisfied]
                    break
            else:
                log.info("boundary: no orthogonal step stayed adversarial; stopping")
                return

            # 2. step towards the original, trust region on epsilon
            for _ in range(self.num_trial):
                candidates = clip01(survivors + epsilon * (x0[None] - survivors))
                satisfied = oracle.is_adversarial(candidates)
                ratio = float(satisfied.mean())
                if ratio < 0.2:
                    epsilon *= self.step_adapt
                elif ratio > 0.5:
                    epsilon /= self.step_adapt
                if ratio > 0:
                    x_adv = self._closest(x0, candidates[satisfied])
                    oracle.report(x_adv)
                    break
            else:
                log.info("boundary: no step towards x0 stayed adversarial; stopping")
                x_adv = self._closest(x0, survivors)
                oracle.report(x_adv)
                return

            if epsilon < self.min_epsilon:
                return

    @staticmethod
    def _orthogonal_perturb(
        rng: np.random.Generator, delta: float, current: np.ndarray, original: np.ndarray, n: int
    ) -> np.ndarray:
        """``n`` steps on the sphere around x0 through ``current`` (ART's ``_orthogonal_perturb``):
        a Gaussian of norm ``delta * ||x0 - current||``, its component along ``x0 - current``
        removed, then the hypotenuse correction that keeps the distance to x0 constant."""
        direction = (original - current).reshape(-1)
        distance = float(np.linalg.norm(direction))
        direction = direction / distance
        perturb = rng.standard_normal((n, direction.size)).astype(np.float32)
        perturb /= np.linalg.norm(perturb, axis=1, keepdims=True)
        perturb *= delta * distance
        perturb -= (perturb @ direction)[:, None] * direction[None]
        hypotenuse = np.sqrt(1.0 + delta**2)
        perturb = ((1.0 - hypotenuse) * (current - original).reshape(1, -1) + perturb) / hypotenuse
        return perturb.reshape(n, *current.shape).astype(np.float32)

    @staticmethod
    def _closest(original: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        diffs = (candidates - original[None]).reshape(len(candidates), -1)
        distances = np.linalg.norm(diffs, axis=1)
        return np.asarray(candidates[int(distances.argmin())])
