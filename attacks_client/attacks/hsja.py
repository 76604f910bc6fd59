"""HopSkipJumpAttack (HSJA), L2, decision-based.

Chen, Jordan, Wainwright: "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE S&P 2020 (arXiv:1904.02144).

Two parameterizations, chosen with ``variant``:

* ``"art"`` (the default): ART 1.20.1's ``HopSkipJump``
  (``art/attacks/evasion/hop_skip_jump.py``), which the SND paper ran (App. B.1: ART with its
  default parameters, ``max_iter = 64``). Bisection threshold ``theta = 0.01 / sqrt(d)``, probe
  radius ``delta = sqrt(d) * theta * dist`` of the *stepped* point (``0.1`` in the first
  iteration). Each iteration starts with a bisection of the current (stepped) point towards x0,
  estimates the normal there, and steps with ``epsilon = dist / sqrt(t + 1)`` halved until
  adversarial. The candidate is the stepped point, as ART returns it: it lies inside the
  adversarial side, not on the boundary, where a fresh noisy answer would be a coin flip.
  Start: ART's ``_init_sample``, uniform noise (``init_size`` draws) then a bisection to
  ``0.001``.
* ``"authors"``: the authors' code, https://github.com/Jianbo-Lab/HSJA (``hsja.py``):
  ``theta = gamma / d^{3/2}``, ``delta = sqrt(d) * theta * dist`` of the bisected point,
  the step from ``dist / sqrt(t)``, the bisection *after* the step, and the bisected boundary
  point as the candidate. Behind SND its probe radius is far below the noise norm ``sigma*sqrt(d)``
  (about 8x smaller than ART's on MNIST, 30x on CIFAR-10).

Departures from both references, each on the attacker's side: ``x0``'s own label is known (ART
queries it once), the step-size search stops after 64 halvings (ART loops until one probe is
adversarial), and near the end of the budget the last gradient estimate uses what is left.
With ``fallback`` (on), a start that finds no adversarial uniform noise goes on with dim noise
(``attacks_client.attacks._geometry.uniform_noise_init``); ART gives up there.

Every query counts: the initial noise draws, every bisection and step-size probe.
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar, Literal

import numpy as np

from attacks_client.attacks._geometry import blend_search, clip01, l2, uniform_noise_init, unit
from attacks_client.attacks.base import Attack, AttackOracle

log = logging.getLogger(__name__)

Variant = Literal["art", "authors"]
ART_THETA_SCALE = 0.01  # ART: theta = 0.01 / sqrt(d) for L2
FIRST_DELTA = 0.1  # both: delta of the first iteration, 0.1 * (clip_max - clip_min)
MAX_HALVINGS = 64


def bisection_threshold(variant: Variant, d: int, gamma: float = 1.0) -> float:
    """``theta``: ART's ``0.01 / sqrt(d)`` or the authors' ``gamma / d^{3/2}``."""
    if variant == "art":
        return ART_THETA_SCALE / math.sqrt(d)
    return gamma / (d * math.sqrt(d))


def probe_radius(iteration: int, d: int, theta: float, dist: float) -> float:
    """``delta`` of iteration ``iteration`` (0-based): 0.1 first, then ``sqrt(d)*theta*dist``."""
    if iteration == 0:
        return FIRST_DELTA
    return max(math.sqrt(d) * theta * dist, 1e-12)


class HopSkipJump(Attack):
    """HSJA (l2, untargeted, or targeted via ``oracle.target``).

    Args:
        max_iter: iterations (64, as the paper ran ART).
        init_num_evals: probes of the first gradient estimate (ART ``init_eval`` 100).
        max_num_evals: cap of the probes per estimate (ART ``max_eval`` 10,000).
        gamma: the authors' threshold constant (``variant="authors"`` only).
        init_size: uniform-noise draws of the start (ART ``init_size`` 100).
        init_threshold: bisection threshold of the start (0.001 in both references).
        variant: ``"art"`` (default, what the paper ran) or ``"authors"``.
        fallback: dim-noise start when uniform noise is never adversarial.
    """

    name: ClassVar[str] = "hsja"

    def __init__(
        self,
        max_iter: int = 64,
        init_num_evals: int = 100,
        max_num_evals: int = 10_000,
        gamma: float = 1.0,
        init_size: int = 100,
        init_threshold: float = 0.001,
        variant: Variant = "art",
        fallback: bool = True,
    ) -> None:
        if max_iter < 0 or init_num_evals < 1 or max_num_evals < init_num_evals:
            raise ValueError("need max_iter >= 0 and 1 <= init_num_evals <= max_num_evals")
        if gamma <= 0 or init_size < 1 or init_threshold <= 0:
            raise ValueError("gamma, init_size and init_threshold must be positive")
        if variant not in ("art", "authors"):
            raise ValueError("variant must be 'art' or 'authors'")
        self.max_iter = max_iter
        self.init_num_evals = init_num_evals
        self.max_num_evals = max_num_evals
        self.gamma = gamma
        self.init_size = init_size
        self.init_threshold = init_threshold
        self.variant: Variant = variant
        self.fallback = fallback

    def theta(self, d: int) -> float:
        """The bisection threshold for ``d`` pixels."""
        return bisection_threshold(self.variant, d, self.gamma)

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        start = uniform_noise_init(oracle, rng, self.init_size, fallback=self.fallback)
        if start is None:
            return
        oracle.report(start)
        # both references: bisection of the noise towards x0 to 0.001
        perturbed = blend_search(oracle, start, self.init_threshold)
        oracle.report(perturbed)
        if l2(perturbed, oracle.x0) == 0.0:  # x0 itself is misclassified: nothing to minimize
            return
        if self.variant == "art":
            self._run_art(oracle, rng, perturbed)
        else:
            self._run_authors(oracle, rng, perturbed)

    def _num_evals(self, oracle: AttackOracle, iteration: int, reserve: int) -> int:
        """``init_num_evals * sqrt(iteration + 1)`` (capped); near the end of the budget what
        is left after ``reserve`` queries for one bisection and a few step probes."""
        num_evals = min(int(self.init_num_evals * math.sqrt(iteration + 1)), self.max_num_evals)
        return max(min(num_evals, oracle.remaining - reserve), 1)

    def _run_art(self, oracle: AttackOracle, rng: np.random.Generator, current: np.ndarray) -> None:
        """ART's ``_attack``: delta, bisection, gradient, step; the stepped point is the
        candidate."""
        x0, d = oracle.x0, oracle.x0.size
        theta = self.theta(d)
        reserve = math.ceil(math.log2(1.0 / theta)) + 4
        for t in range(self.max_iter):
            delta = probe_radius(t, d, theta, l2(current, x0))
            boundary = blend_search(oracle, current, theta)
            update = self._gradient(
                oracle, rng, boundary, self._num_evals(oracle, t, reserve), delta
            )
            step = self._step_size(oracle, boundary, update, l2(boundary, x0) / math.sqrt(t + 1))
            current = clip01(boundary + step * update)
            oracle.report(current)
            log.debug("hsja iter %d: l2 %.4f, %d queries", t, l2(current, x0), oracle.queries)

    def _run_authors(
        self, oracle: AttackOracle, rng: np.random.Generator, perturbed: np.ndarray
    ) -> None:
        """Jianbo-Lab's loop: gradient at the boundary point, step, bisection; the bisected
        point is the candidate."""
        x0, d = oracle.x0, oracle.x0.size
        theta = self.theta(d)
        reserve = math.ceil(math.log2(1.0 / theta)) + 4
        perturbed = blend_search(oracle, perturbed, theta)
        oracle.report(perturbed)
        dist = dist_post_update = l2(perturbed, x0)
        for t in range(1, self.max_iter + 1):
            delta = probe_radius(t - 1, d, theta, dist_post_update)
            update = self._gradient(
                oracle, rng, perturbed, self._num_evals(oracle, t - 1, reserve), delta
            )
            step = self._step_size(oracle, perturbed, update, dist / math.sqrt(t))
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
        oracle: AttackOracle, x: np.ndarray, update: np.ndarray, epsilon: float
    ) -> float:
        """Geometric progression from ``epsilon``, halved until the step stays adversarial."""
        for _ in range(MAX_HALVINGS):
            if oracle.is_adversarial(clip01(x + epsilon * update))[0]:
                return epsilon
            epsilon /= 2.0
        return 0.0
