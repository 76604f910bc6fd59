"""GeoDA (geometric decision-based attack), L2.

Rahmati, Moosavi-Dezfooli, Frossard, Dai: "GeoDA: a geometric framework for black-box
adversarial attacks", CVPR 2020 (arXiv:2003.06468). Reference code:
https://github.com/thisisalirah/GeoDA (``GeoDA.py``), which the SND paper ported without
changing its special parameters (App. B.1).

GeoDA assumes the boundary is locally flat near a boundary point ``x_b``. Each iteration
estimates its normal from ``q_i`` random probes ``x_b + sigma * v`` with ``v`` Gaussian in the
low-frequency DCT subspace (``sub_dim x sub_dim`` coefficients per channel), accumulates the
estimates, walks from x0 along the accumulated normal until adversarial (``go_to_boundary``) and
bisects back to the boundary (``bin_search``, to ``tol``). The query schedule ``q_i`` grows
geometrically with ratio ``mu^(-2/3)`` (``opt_query_iteration``), planned for the whole budget.

Scaled to the image size: the reference's ``sub_dim = 75`` is for 224 px images; the default
here is ``ceil(75 * H / 224)`` (10 for 28 px, 11 for 32 px). The reference's
``go_to_boundary`` walks in fixed steps of 5 (ImageNet-normalised units) along the raw
accumulated gradient; here the step is ``step_scale`` times the current boundary distance along
the unit normal, which makes the walk scale-free. Start: ``x0 + k * init_step * N(0, I)``,
k = 1, 2, ... (``find_random_adversarial``), capped at ``init_tries`` queries, then a bisection.

Every query counts, the start-up search and every bisection included (the reference does not
query x0 itself in ``go_to_boundary`` here: its label is known).
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import numpy as np

from attacks_client.attacks._geometry import clip01, dim_noise_init, unit
from attacks_client.attacks.base import Attack, AttackOracle
from attacks_client.attacks.dct import idct2

log = logging.getLogger(__name__)


def opt_query_iteration(nq: int, t: int, eta: float) -> tuple[list[int], int]:
    """The reference's query schedule: ``t`` iterations with queries proportional to
    ``eta^(-2i/3)`` summing to ``nq``, ``t`` adjusted until the first has 50 to 80 queries."""
    seen: set[int] = set()
    while True:
        coefs = [eta ** (-2 * i / 3) for i in range(t)]
        total = sum(coefs)
        opt_q = [round(nq * c / total) for c in coefs]
        seen.add(t)
        if opt_q[0] > 80 and t + 1 not in seen:
            t += 1
        elif opt_q[0] < 50 and t > 1 and t - 1 not in seen:
            t -= 1
        else:
            return opt_q, t


def query_schedule(budget: int, mu: float, per_iteration: int = 25) -> list[int]:
    """``GeoDA.py``'s two-pass planning for a total of ``budget`` queries."""
    iteration = max(round(budget / 500), 1)
    _, iterate = opt_query_iteration(int(budget - iteration * per_iteration), iteration, mu)
    q_opt, _ = opt_query_iteration(int(budget - iterate * per_iteration), iteration, mu)
    return [max(q, 1) for q in q_opt]


class GeoDA(Attack):
    """GeoDA (l2, untargeted, or targeted via ``oracle.target``)."""

    name: ClassVar[str] = "geoda"

    def __init__(
        self,
        sub_dim: int | None = None,
        mu: float = 0.6,
        sigma: float = 0.0002,
        tol: float = 0.0001,
        grad_estimator_batch_size: int = 40,
        init_step: float = 0.02,
        init_tries: int = 200,
        step_scale: float = 1.0,
        max_walk: int = 100,
        max_queries: int | None = None,
    ) -> None:
        if sub_dim is not None and sub_dim < 1:
            raise ValueError("sub_dim must be positive")
        if not 0 < mu < 1 or sigma <= 0 or tol <= 0 or step_scale <= 0:
            raise ValueError("need 0 < mu < 1 and positive sigma, tol, step_scale")
        self.sub_dim = sub_dim
        self.mu = mu
        self.sigma = sigma
        self.tol = tol
        self.grad_estimator_batch_size = grad_estimator_batch_size
        self.init_step = init_step
        self.init_tries = init_tries
        self.step_scale = step_scale
        self.max_walk = max_walk
        self.max_queries = max_queries

    def _sub_dim(self, shape: tuple[int, ...]) -> int:
        if self.sub_dim is not None:
            return min(self.sub_dim, shape[-2], shape[-1])
        return min(math.ceil(75 * shape[-2] / 224), shape[-2], shape[-1])

    def _bin_search(self, oracle: AttackOracle, x_adv: np.ndarray) -> np.ndarray:
        """Bisection between x0 and ``x_adv`` until the bracket is shorter than ``tol`` (L2)."""
        clean, adv = oracle.x0, x_adv
        while float(np.linalg.norm(adv - clean)) >= self.tol:
            mid = (clean + adv) / 2.0
            if oracle.is_adversarial(mid)[0]:
                adv = mid
            else:
                clean = mid
        return np.asarray(adv, dtype=np.float32)

    def _find_random_adversarial(
        self, oracle: AttackOracle, rng: np.random.Generator
    ) -> np.ndarray | None:
        x0 = oracle.x0
        for k in range(1, self.init_tries + 1):
            noise = rng.standard_normal(x0.shape).astype(np.float32)
            candidate = clip01(x0 + k * self.init_step * noise)
            if oracle.is_adversarial(candidate)[0]:
                return candidate
        # strong noise can stay in the true class (MNIST "8"s): try dim uniform noise
        return dim_noise_init(oracle, rng, self.init_tries)

    def _normal_estimate(
        self, oracle: AttackOracle, rng: np.random.Generator, x_b: np.ndarray, q: int, s: int
    ) -> np.ndarray:
        """``black_grad_batch``: mean of ``+v`` for adversarial probes, ``-v`` otherwise."""
        coefficients = np.zeros((q, *x_b.shape), np.float32)
        coefficients[..., :s, :s] = rng.standard_normal((q, x_b.shape[0], s, s))
        noise = idct2(coefficients).astype(np.float32)
        probes = clip01(x_b[None] + self.sigma * noise)
        batch = max(self.grad_estimator_batch_size, 1)
        adversarial = np.concatenate(
            [oracle.is_adversarial(probes[i : i + batch]) for i in range(0, q, batch)]
        )
        signs = np.where(adversarial, 1.0, -1.0).astype(np.float32).reshape(-1, 1, 1, 1)
        return np.asarray((signs * noise).mean(0), dtype=np.float32)

    def _go_to_boundary(
        self, oracle: AttackOracle, direction: np.ndarray, distance: float
    ) -> np.ndarray | None:
        """Walk from x0 along ``direction`` in steps of ``step_scale * distance``."""
        step = self.step_scale * distance
        for k in range(1, self.max_walk + 1):
            candidate = clip01(oracle.x0 + k * step * direction)
            if oracle.is_adversarial(candidate)[0]:
                return candidate
        return None

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0 = oracle.x0
        start = oracle.remaining  # images, not real queries (behind RepeatOracle: T per image)
        budget = self.max_queries if self.max_queries is not None else start
        s = self._sub_dim(x0.shape)

        x_random = self._find_random_adversarial(oracle, rng)
        if x_random is None:
            log.info("geoda: no adversarial start found")
            return
        oracle.report(x_random)
        x_b = self._bin_search(oracle, x_random)
        oracle.report(x_b)

        spent = start - oracle.remaining
        schedule = query_schedule(max(budget - spent, 1), self.mu)
        log.debug("geoda: sub_dim %d, schedule %s", s, schedule)
        grad = np.zeros_like(x0)
        for q in schedule:
            grad = grad + self._normal_estimate(oracle, rng, x_b, q, s)
            walked = self._go_to_boundary(oracle, unit(grad), float(np.linalg.norm(x_b - x0)))
            if walked is None:
                log.debug("geoda: walk along the estimate found no adversarial point")
                continue
            x_b = self._bin_search(oracle, walked)  # the reference always moves on
            oracle.report(x_b)
