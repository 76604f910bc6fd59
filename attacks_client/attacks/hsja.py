"""HopSkipJumpAttack (HSJA), L2, decision-based.

Chen, Jordan, Wainwright: "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020 (arXiv:1904.02144). Reference code: https://github.com/Jianbo-Lab/HSJA
(``hsja.py``), and ART's ``HopSkipJump``, which the SND paper used (App. B.1) with its default
parameters except ``max_iter = 64`` as in the authors' code.

Each iteration: (1) estimate the boundary normal at the current boundary point from
``init_num_evals * sqrt(t)`` sign queries at radius ``delta`` (one batched oracle call),
(2) geometric step-size search along it, (3) bisection back to the boundary towards x0.
Initialisation: uniform-noise images until one is adversarial, then bisection towards x0.
The bisection threshold is the authors' ``theta = gamma / d^{3/2}`` and
``delta = sqrt(d) * theta * dist`` (``0.1`` in the first iteration), for l2.

Every query counts: the initial noise draws, every bisection and step-size probe.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import numpy as np

from attacks_client.attacks._geometry import blend_search, clip01, l2, uniform_noise_init, unit
from attacks_client.attacks.base import Attack, AttackOracle

log = logging.getLogger(__name__)


class HopSkipJump(Attack):
    """HSJA (l2, untargeted, or targeted via ``oracle.target``)."""

    name: ClassVar[str] = "hsja"

    def __init__(
        self,
        max_iter: int = 64,
        init_num_evals: int = 100,
        max_num_evals: int = 10_000,
        gamma: float = 1.0,
        init_size: int = 100,
        init_threshold: float = 0.001,
    ) -> None:
        if max_iter < 0 or init_num_evals < 1 or max_num_evals < init_num_evals:
            raise ValueError("need max_iter >= 0 and 1 <= init_num_evals <= max_num_evals")
        if gamma <= 0 or init_size < 1 or init_threshold <= 0:
            raise ValueError("gamma, init_size and init_threshold must be positive")
        self.max_iter = max_iter
        self.init_num_evals = init_num_evals
        self.max_num_evals = max_num_evals
        self.gamma = gamma
        self.init_size = init_size
        self.init_threshold = init_threshold

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0 = oracle.x0
        d = x0.size
        theta = self.gamma / (d * math.sqrt(d))
        reserve = math.ceil(math.log2(1.0 / theta)) + 4  # one bisection and a few step probes

        start = uniform_noise_init(oracle, rng, self.init_size)
        if start is None:
            return
        oracle.report(start)
        # Jianbo-Lab's ``initialize`` (blended-noise bisection, threshold 0.001), then
        # ``binary_search_batch`` (threshold theta) to the boundary.
        perturbed = blend_search(oracle, start, self.init_threshold)
        oracle.report(perturbed)
        perturbed = blend_search(oracle, perturbed, theta)
        oracle.report(perturbed)
        dist = dist_post_update = l2(perturbed, x0)
        if dist == 0.0:  # x0 itself is already misclassified: nothing to minimize
            return

        for t in range(1, self.max_iter + 1):
            delta = 0.1 if t == 1 else max(math.sqrt(d) * theta * dist_post_update, 1e-12)
            num_evals = min(int(self.init_num_evals * math.sqrt(t)), self.max_num_evals)
            # near the end of the budget, spend what is left rather than stop short
            num_evals = max(min(num_evals, oracle.remaining - reserve), 1)
            update = self._gradient(oracle, rng, perturbed, num_evals, delta)
            step = self._step_size(oracle, perturbed, update, dist, t)
            stepped = clip01(perturbed + step * update)
            dist_post_update = l2(stepped, x0)
            perturbed = blend_search(oracle, stepped, theta)
            dist = l2(perturbed, x0)
            oracle.report(perturbed)
            log.debug("hsja iter %d: l2 %.4f, %d queries", t, dist, oracle.queries)

    @staticmethod
    def _gradient(
        oracle: AttackOracle,
        rng: np.random.Generator,
        x: np.ndarray,
        num_evals: int,
        delta: float,
    ) -> np.ndarray:
        """Monte-Carlo estimate of the boundary normal at ``x`` (Eq. 9-10, baseline-corrected);
        the ``num_evals`` probes go to the oracle as one batch."""
        rv = rng.standard_normal((num_evals, *x.shape)).astype(np.float32)
        rv /= np.sqrt(np.sum(rv**2, axis=(1, 2, 3), keepdims=True))
        probes = clip01(x[None] + delta * rv)
        rv = (probes - x[None]) / delta
        fval = 2.0 * oracle.is_adversarial(probes).astype(np.float32) - 1.0
        mean = float(fval.mean())
        if mean == 1.0:
            grad = rv.mean(0)
        elif mean == -1.0:
            grad = -rv.mean(0)
        else:
            grad = ((fval - mean)[:, None, None, None] * rv).mean(0)
        return unit(grad)

    @staticmethod
    def _step_size(
        oracle: AttackOracle, x: np.ndarray, update: np.ndarray, dist: float, t: int
    ) -> float:
        """Geometric progression: ``dist / sqrt(t)`` halved until the step stays adversarial."""
        epsilon = dist / math.sqrt(t)
        for _ in range(64):
            if oracle.is_adversarial(clip01(x + epsilon * update))[0]:
                return epsilon
            epsilon /= 2.0
        return 0.0
