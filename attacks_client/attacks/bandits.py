"""Bandit-TD: bandit optimization with time and data-dependent priors (score-based).

Andrew Ilyas, Logan Engstrom, Aleksander Madry. "Prior Convictions: Black-Box Adversarial
Attacks with Bandits and Priors", ICLR 2019 (arXiv:1807.07978). Ported from the authors' code,
https://github.com/MadryLab/blackbox-bandits (``src/main.py``: ``make_adversarial_examples``,
``src/configs/l2.json``), as the SND paper did (App. B.1: default parameters except
``batch_size=1`` and ``epsilon=4.9``).

Per iteration (``gradient_iters=1``): draw exploration noise u around the prior v (a low
resolution "tiled" image — the data prior — kept from step to step — the time prior), query the
loss at ``x + fd_eta * up(v ± u) / ||up(v ± u)||`` (2 queries, one request), update the prior
with the finite-difference estimate, take an L2 step ``image_lr * up(v) / ||up(v)||``, project
onto the ε-ball around ``x0`` and into [0, 1]. Probes are clipped to [0, 1] (the reference sends
them unclipped; the endpoint refuses pixels outside [0, 1]).

Counting: 2 queries per iteration, as the reference counts them. The reference also classifies
the new image after every step (``normalized_eval(image)``) without counting it; here that check
costs nothing either: the next iteration's two probes lie within ``fd_eta`` of the new image and
their answered scores carry its label, so a probe answered adversarial is reported as the
candidate (it ends the attack when it lies inside the ε-ball; for one just outside, the new
image itself is asked, once). In a budget B the attack makes ⌊(B − 1) / 2⌋ iterations; the
one extra query is x0's first answer, which the reference looks at uncounted (the records carry
the reference's count beside ours).

The loss is the reference's cross-entropy of the true class, computed from the returned
probabilities as ``-log p_y = log1p(sum_{c != y} p_c / p_y)`` (identical for normalized scores,
and it keeps its resolution when ``p_y`` is within one float32 step of 1). Targeted: the
negative cross-entropy of the target class.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from attacks_client.attacks._probes import probe_success, top_is_adversarial
from attacks_client.attacks.base import Attack, AttackOracle

# the reference's tiling prior: tile_size=50 (l2.json) on 224-px ResNet-50 inputs (SND paper)
REFERENCE_TILE_SIZE, REFERENCE_IMAGE_SIZE = 50, 224
SMALL_IMAGE_TILE_PX = 3


def scaled_tile_size(image_size: int) -> int:
    """Default prior side for an image of side ``image_size``.

    The reference's 50 on images of 224 px or more (tiles of ~4.5 px). On small images
    (MNIST 28 px, CIFAR 32 px) tiles of about 3 px: 28 -> 9, 32 -> 11. Scaling the reference's
    prior side by image size (28 -> 6, tiles of ~4.7 px, wider than a digit's stroke) lowered
    the success within L2 ε = 2 on the embedded MNIST model from 11 of 11 images (9-14 tiles,
    3k queries) to 3 of 9 (6 tiles, 10k queries); see docs/results/score-attacks.md.
    """
    if image_size >= REFERENCE_IMAGE_SIZE:
        return REFERENCE_TILE_SIZE
    return max(1, round(image_size / SMALL_IMAGE_TILE_PX))


def upsample_nearest(prior: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``torch.nn.Upsample(size, mode='nearest')`` of a ``(C, h, w)`` prior to ``(C, *size)``."""
    _, h, w = prior.shape
    rows = np.minimum((np.arange(size[0]) * (h / size[0])).astype(np.int64), h - 1)
    cols = np.minimum((np.arange(size[1]) * (w / size[1])).astype(np.int64), w - 1)
    return prior[:, rows[:, None], cols[None, :]]


def _l2(x: np.ndarray) -> float:
    """The reference's ``norm``: L2 norm with a zero norm replaced by 1e-8."""
    value = float(np.sqrt(np.sum(np.square(x, dtype=np.float64))))
    return value if value > 0 else 1e-8


class BanditTD(Attack):
    """Bandit-TD (L2) with the reference's ``l2.json`` hyperparameters.

    Args:
        epsilon: radius of the L2 ball around ``x0`` the attack stays in (paper: 4.9 on
            224-px ImageNet; pass the evaluation's ε on other data, e.g. MNIST).
        fd_eta: finite-difference step (``fd_eta`` 0.01).
        image_lr: L2 length of an image step (``image_lr`` 0.5).
        online_lr: learning rate of the prior (``online_lr`` 0.1).
        exploration: size of the exploration noise around the prior (``exploration`` 0.01).
        tiling: use the tiling (data) prior.
        tile_size: side of the low-resolution prior, in tiles, as the reference's code uses
            its ``tile_size`` (its help text calls it a tile's side); ``None``: 50 on 224-px
            images, ~3-px tiles on small ones (:func:`scaled_tile_size`).
        gradient_iters: finite-difference estimates per iteration (1; the bandit update uses
            one, like the reference).
    """

    name: ClassVar[str] = "bandit-td"
    needs_scores: ClassVar[bool] = True

    def __init__(
        self,
        epsilon: float = 4.9,
        fd_eta: float = 0.01,
        image_lr: float = 0.5,
        online_lr: float = 0.1,
        exploration: float = 0.01,
        tiling: bool = True,
        tile_size: int | None = None,
        gradient_iters: int = 1,
    ) -> None:
        if epsilon <= 0 or fd_eta <= 0 or image_lr <= 0 or exploration <= 0:
            raise ValueError("epsilon, fd_eta, image_lr and exploration must be > 0")
        if gradient_iters != 1:
            raise ValueError("the bandit prior update takes gradient_iters=1 (as the reference)")
        if tile_size is not None and tile_size < 1:
            raise ValueError("tile_size must be >= 1")
        self.epsilon = epsilon
        self.fd_eta = fd_eta
        self.image_lr = image_lr
        self.online_lr = online_lr
        self.exploration = exploration
        self.tiling = tiling
        self.tile_size = tile_size
        self.gradient_iters = gradient_iters

    def prior_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape of the prior for an input of ``input_shape``."""
        channels, height, width = input_shape
        if not self.tiling:
            return (channels, height, width)
        side = self.tile_size or scaled_tile_size(min(height, width))
        return (channels, min(side, height), min(side, width))

    @staticmethod
    def _loss(probs: np.ndarray, oracle: AttackOracle) -> np.ndarray:
        """Cross-entropy of the true class (ascended), or minus that of the target."""
        p = np.asarray(probs, np.float64)
        cls = oracle.target if oracle.target is not None else oracle.label
        p_cls = np.maximum(p[:, cls], 1e-300)
        xent = np.log1p((p.sum(1) - p[:, cls]) / p_cls)
        return -xent if oracle.target is not None else xent

    def _project(self, x0: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The reference's ``l2_proj`` then ``clamp(0, 1)``."""
        delta = x - x0
        norm = _l2(delta)
        if norm > self.epsilon:
            x = x0 + self.epsilon * delta / norm
        return np.clip(x, 0.0, 1.0).astype(np.float32)

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0 = oracle.x0
        size = x0.shape[1:]
        probs = oracle.scores(x0[None])[0]
        oracle.not_counted_by_reference(1)
        if top_is_adversarial(probs, oracle):
            oracle.report(x0)
            return
        prior = np.zeros(self.prior_shape(oracle.input_shape), np.float64)
        dim = prior.size
        x = x0.copy()
        while True:
            # bandit update of the prior: antithetic finite differences (2 queries)
            noise = self.exploration * rng.standard_normal(prior.shape) / np.sqrt(dim)
            q1 = upsample_nearest(prior + noise, size)
            q2 = upsample_nearest(prior - noise, size)
            probes = np.clip(
                np.stack([x + self.fd_eta * q1 / _l2(q1), x + self.fd_eta * q2 / _l2(q2)]), 0.0, 1.0
            )
            answers = oracle.scores(probes.astype(np.float32))
            if probe_success(oracle, x, probes, answers, lambda p: self._in_ball(x0, p)):
                return
            l1, l2 = self._loss(answers, oracle)
            est_deriv = (l1 - l2) / (self.fd_eta * self.exploration)
            prior = prior + self.online_lr * est_deriv * noise
            # image step along the prior, projected; checked by the next iteration's probes
            step = upsample_nearest(prior, size)
            x = self._project(x0, x + self.image_lr * step / _l2(step))

    def _in_ball(self, x0: np.ndarray, x: np.ndarray) -> bool:
        return _l2(x - x0) <= self.epsilon * (1 + 1e-6)


__all__ = ["BanditTD", "scaled_tile_size", "upsample_nearest"]
