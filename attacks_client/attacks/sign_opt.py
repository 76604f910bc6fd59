"""Sign-OPT, L2, decision-based.

Cheng, Singh, Chen, Chen, Liu, Hsieh: "Sign-OPT: A Query-Efficient Hard-label Adversarial
Attack", ICLR 2020 (arXiv:1909.10773). Reference code: https://github.com/cmhcbb/attackbox
(``attack/Sign_OPT.py``, ``OPT_attack_sign_SGD.attack_untargeted``), which the SND paper ported
without changing its parameters (App. B.1).

The attack searches a direction ``theta`` (unit norm) minimising ``g(theta)``, the distance from
x0 to the decision boundary along ``theta``, found by bisection. Each iteration estimates the
sign gradient of ``g`` from ``k`` single queries at ``x0 + g(theta) * (theta + beta u) / ||.||``
(one batch; ``sign_grad_v1``: the mean of ``sign * u``), then line-searches the step ``alpha``
(doubling while it helps, else quartering) with local bisections. Start: ``num_directions``
Gaussian directions (one batch), a bisection on each adversarial one.

Every query counts (the direction search and all bisections included). Queries are clipped to
[0, 1], as the reference model wrapper does; the reported candidate is the clipped image.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from attacks_client.attacks._geometry import clip01, dim_noise_init
from attacks_client.attacks.base import Attack, AttackOracle

log = logging.getLogger(__name__)


class SignOPT(Attack):
    """Sign-OPT (l2, untargeted, or targeted via ``oracle.target``)."""

    name: ClassVar[str] = "sign-opt"

    def __init__(
        self,
        k: int = 200,
        alpha: float = 0.2,
        beta: float = 0.001,
        iterations: int = 1000,
        num_directions: int = 100,
        init_tol: float = 1e-3,
        max_lambda: float = 20.0,
        grad_estimator: str = "v1",
    ) -> None:
        if k < 1 or num_directions < 1 or alpha <= 0 or beta <= 0:
            raise ValueError("k, num_directions, alpha and beta must be positive")
        if grad_estimator not in ("v1", "v2"):
            raise ValueError("grad_estimator is 'v1' (sign * u) or 'v2' (sign * sign(u))")
        self.k = k
        self.alpha = alpha
        self.beta = beta
        self.iterations = iterations
        self.num_directions = num_directions
        self.init_tol = init_tol
        self.max_lambda = max_lambda
        self.grad_estimator = grad_estimator

    # -- the boundary distance along a direction -------------------------------------------------

    def _adv(self, oracle: AttackOracle, theta: np.ndarray, lbd: float) -> bool:
        return bool(oracle.is_adversarial(clip01(oracle.x0 + lbd * theta))[0])

    def _search(
        self, oracle: AttackOracle, theta: np.ndarray, initial_lbd: float, current_best: float
    ) -> float:
        """``fine_grained_binary_search``: g(theta) to ``init_tol``, or inf if worse than best."""
        if initial_lbd > current_best:
            if not self._adv(oracle, theta, current_best):
                return float("inf")
            lbd = current_best
        else:
            lbd = initial_lbd
        return self._bisect(oracle, theta, 0.0, lbd, self.init_tol)

    def _search_local(
        self, oracle: AttackOracle, theta: np.ndarray, initial_lbd: float, tol: float
    ) -> float:
        """``fine_grained_binary_search_local``: bracket g(theta) around ``initial_lbd`` by 1%
        steps, then bisect to ``tol``; inf beyond ``max_lambda``."""
        lbd = initial_lbd
        if not self._adv(oracle, theta, lbd):
            lo, hi = lbd, lbd * 1.01
            while not self._adv(oracle, theta, hi):
                hi *= 1.01
                if hi > self.max_lambda:
                    return float("inf")
        else:
            hi, lo = lbd, lbd * 0.99
            while self._adv(oracle, theta, lo):
                lo *= 0.99
        return self._bisect(oracle, theta, lo, hi, tol)

    def _bisect(
        self, oracle: AttackOracle, theta: np.ndarray, lo: float, hi: float, tol: float
    ) -> float:
        """Bisect the boundary distance along ``theta`` between a clean ``lo`` and an
        adversarial ``hi`` to ``tol``; returns the adversarial end."""
        while hi - lo > tol:
            mid = (lo + hi) / 2.0
            if self._adv(oracle, theta, mid):
                hi = mid
            else:
                lo = mid
        return hi

    def _sign_grad(
        self,
        oracle: AttackOracle,
        rng: np.random.Generator,
        theta: np.ndarray,
        lbd: float,
        beta: float,
    ) -> np.ndarray:
        """Sign-OPT's estimate: mean over k unit Gaussians u of ``s(u) * u`` where ``s = -1`` if
        ``x0 + lbd * normalize(theta + beta u)`` is adversarial (g decreases), else ``+1``."""
        u = rng.standard_normal((self.k, *theta.shape)).astype(np.float32)
        u /= np.linalg.norm(u.reshape(self.k, -1), axis=1).reshape(-1, 1, 1, 1)
        new_theta = theta[None] + beta * u
        new_theta /= np.linalg.norm(new_theta.reshape(self.k, -1), axis=1).reshape(-1, 1, 1, 1)
        adversarial = oracle.is_adversarial(clip01(oracle.x0[None] + lbd * new_theta))
        signs = np.where(adversarial, -1.0, 1.0).astype(np.float32).reshape(-1, 1, 1, 1)
        basis = u if self.grad_estimator == "v1" else np.where(u >= 0, 1.0, -1.0)
        return np.asarray((signs * basis).mean(0), dtype=np.float32)

    # -- the attack ------------------------------------------------------------------------------

    def _report(self, oracle: AttackOracle, theta: np.ndarray, lbd: float) -> None:
        oracle.report(clip01(oracle.x0 + lbd * theta))

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0 = oracle.x0
        # initial direction: num_directions Gaussian directions in one batch
        thetas = rng.standard_normal((self.num_directions, *x0.shape)).astype(np.float32)
        adversarial = oracle.is_adversarial(clip01(x0[None] + thetas))
        best_theta, g_theta = None, float("inf")
        for theta in thetas[adversarial]:
            initial_lbd = float(np.linalg.norm(theta))
            theta = theta / initial_lbd
            lbd = self._search(oracle, theta, initial_lbd, g_theta)
            if lbd < g_theta:
                best_theta, g_theta = theta, lbd
                self._report(oracle, best_theta, g_theta)
        if best_theta is None:
            # Gaussian directions can all stay in the true class (the MNIST model calls all
            # strong noise an "8"): fall back to the direction of a dim-noise adversarial image.
            log.info("sign-opt: no adversarial direction among %d", self.num_directions)
            start = dim_noise_init(oracle, rng, self.num_directions)
            if start is None:
                return
            theta = start - x0
            initial_lbd = float(np.linalg.norm(theta))
            best_theta = theta / initial_lbd
            g_theta = self._search(oracle, best_theta, initial_lbd, g_theta)
            self._report(oracle, best_theta, g_theta)

        xg, gg = best_theta, g_theta
        alpha, beta = self.alpha, self.beta
        for _ in range(self.iterations):
            sign_gradient = self._sign_grad(oracle, rng, xg, gg, beta)

            # line search: grow alpha while g decreases
            min_theta, min_g2 = xg, gg
            for _ in range(15):
                new_theta = xg - alpha * sign_gradient
                new_theta /= np.linalg.norm(new_theta)
                new_g2 = self._search_local(oracle, new_theta, min_g2, beta / 500)
                alpha *= 2.0
                if new_g2 < min_g2:
                    min_theta, min_g2 = new_theta, new_g2
                else:
                    break
            if min_g2 >= gg:  # the first alpha failed: shrink it
                for _ in range(15):
                    alpha *= 0.25
                    new_theta = xg - alpha * sign_gradient
                    new_theta /= np.linalg.norm(new_theta)
                    new_g2 = self._search_local(oracle, new_theta, min_g2, beta / 500)
                    if new_g2 < gg:
                        min_theta, min_g2 = new_theta, new_g2
                        break
            if alpha < 1e-4:  # not moving: reset alpha, refine beta
                alpha = 1.0
                beta *= 0.1
                log.debug("sign-opt: not moving; beta -> %g", beta)
                if beta < 1e-8:
                    return
            if min_g2 < gg:
                xg, gg = min_theta, min_g2
                self._report(oracle, xg, gg)
