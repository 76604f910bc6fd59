"""Square Attack: score-based random search in L2 or L∞ balls.

Maksym Andriushchenko, Francesco Croce, Nicolas Flammarion, Matthias Hein. "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020 (arXiv:1912.00049).
Written from the authors' code, https://github.com/max-andr/square-attack (``attack.py``:
``square_attack_l2``, ``square_attack_linf``, ``p_selection``, ``meta_pseudo_gaussian_pert``;
``models.py``: the margin loss).

What is the reference's:

* initialization: L2, a grid of pseudo-Gaussian bumps of side ``h // 5`` with random signs per
  channel, scaled to radius ε; L∞, vertical stripes of ±ε (one sign per channel and column);
* the piecewise-constant ``p`` schedule over the iteration budget (:func:`p_selection`);
* L2 updates: two random windows of side s (odd, ≥ 3); the second window's mass is moved into
  the first (a fresh bump of random sign plus the first window's old direction), and the whole
  perturbation is rescaled to radius ε before clipping to [0, 1];
* L∞ updates: one window of side s set to ±ε per channel, redrawn while it would not change the
  incumbent;
* the margin loss ``log p_y − max_{j≠y} log p_j`` (the reference's logit margin; log-softmax
  differs from logits by a constant per image), the cross-entropy of the target class when
  targeted; a candidate replaces the incumbent when its loss is strictly lower;
* one query per iteration, plus one for the initialization; the attack stops once the
  incumbent's margin is ≤ 0 (the reference drops an image from the batch then).

Where ours departs: one image per run (the reference attacks a batch; its random numbers are
drawn per batch, ours per image from the run's seed); the iteration budget of the schedule is
the run's query budget in images (``n_iters``), less what ``remeasure`` spends; zero norms are
guarded so that no non-finite image is ever sent (ART 1.20.1's port sends NaNs); a candidate is
cast to float32 and kept inside the ball and [0, 1].

Noise-aware options (all off by default; the reference has none). Against a randomized endpoint
a single answer is one draw: the plain attack stops on a lucky draw and keeps a candidate whose
loss was measured once (a winner's curse).

* ``repeat = T`` (the grid's and the CLI's ``--repeat``): each logical query is T real queries;
  Square asks for the mean *log*-probability of the T draws (:attr:`repeat_mean`).
* ``confirm = k``: a success is asked again with k fresh answers (one request) and holds when
  every one of them is adversarial; otherwise the incumbent's loss becomes the mean over every
  answer it got and the search goes on. (A majority of k is a coin flip for a candidate on the
  boundary, where P(adversarial) ≈ 1/2 whatever k: measured, majority-of-3 stopped on
  candidates that 5 of the evaluator's 10 draws misclassified.)
* ``remeasure``: each iteration sends the incumbent with the candidate (one request, two
  images); the incumbent's loss is the running mean of all its answers, so one lucky draw never
  decides the comparison.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

from attacks_client.attacks.base import Attack, AttackOracle
from attacks_client.oracles.base import log_probabilities

log = logging.getLogger(__name__)

DEFAULT_P_INIT = {"2": 0.1, "inf": 0.05}
"""The reference's recommended ``p`` (``--p`` help: L∞ 0.05, L2 0.1)."""
DEFAULT_EPSILON = {"2": 1.5, "inf": 0.3}
"""The project's primary L2 ε on MNIST, and the usual MNIST L∞ radius."""


def p_selection(p_init: float, iteration: int, n_iters: int) -> float:
    """The reference's piecewise-constant schedule of ``p``, the fraction of pixels changed,
    at ``iteration`` of ``n_iters`` (rescaled to 10,000 iterations)."""
    it = int(iteration / n_iters * 10000)
    for upper, divisor in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
        (10000, 512),
    ):
        if it <= upper:
            return p_init / divisor
    return p_init


def pseudo_gaussian_rectangle(rows: int, cols: int) -> np.ndarray:
    """The reference's ``pseudo_gaussian_pert_rectangles``: nested rectangles around the centre,
    weight 1/(k+1)^2 for the k-th, unit L2 norm."""
    delta = np.zeros((rows, cols))
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        rows_k = slice(max(top, 0), min(top + 2 * k + 1, rows))
        cols_k = slice(max(left, 0), min(left + 2 * k + 1, cols))
        delta[rows_k, cols_k] += 1.0 / (k + 1) ** 2
        top, left = top - 1, left - 1
    return delta / np.sqrt(np.sum(delta**2))


@functools.lru_cache(maxsize=64)
def _bump(side: int) -> np.ndarray:
    """Two opposite pseudo-Gaussian halves, unit L2 norm (read-only: it is shared)."""
    delta = np.zeros((side, side))
    delta[: side // 2] = pseudo_gaussian_rectangle(side // 2, side)
    delta[side // 2 :] = -pseudo_gaussian_rectangle(side - side // 2, side)
    delta /= np.sqrt(np.sum(delta**2))
    delta.flags.writeable = False
    return delta


def pseudo_gaussian_bump(side: int, rng: np.random.Generator) -> np.ndarray:
    """The reference's ``meta_pseudo_gaussian_pert``: two opposite pseudo-Gaussian halves,
    transposed with probability 1/2, unit L2 norm (a read-only array: the halves depend on
    the side only, so they are computed once per side)."""
    delta = _bump(side)
    return delta.T if rng.random() > 0.5 else delta


@dataclass
class _Incumbent:
    """The best point so far and every loss/margin answered for it."""

    x: np.ndarray
    losses: list[float] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    reported: bool = False

    @property
    def loss(self) -> float:
        return float(np.mean(self.losses))

    @property
    def margin(self) -> float:
        return float(np.mean(self.margins))


class SquareAttack(Attack):
    """Square Attack (score-based, L2 or L∞), the authors' algorithm.

    Args:
        norm: ``"2"`` or ``"inf"``.
        epsilon: radius of the ball (``None``: 1.5 for L2, 0.3 for L∞, MNIST radii).
        p_init: initial fraction of pixels changed (``None``: the reference's 0.1 for L2 and
            0.05 for L∞).
        confirm: k fresh answers that must all confirm a success before the attack stops (0:
            the reference's stop on the first adversarial answer).
        remeasure: measure the incumbent afresh with every candidate (2 images an iteration).
    """

    name: ClassVar[str] = "square"
    needs_scores: ClassVar[bool] = True
    repeat_mean: ClassVar[Literal["probabilities", "log-probabilities"]] = "log-probabilities"

    def __init__(
        self,
        norm: Literal["2", "inf"] = "2",
        epsilon: float | None = None,
        p_init: float | None = None,
        confirm: int = 0,
        remeasure: bool = False,
    ) -> None:
        norm = str(norm).lower().removeprefix("l")  # type: ignore[assignment]
        if norm not in ("2", "inf"):
            raise ValueError("norm must be '2' or 'inf'")
        self.norm: Literal["2", "inf"] = norm
        self.epsilon = DEFAULT_EPSILON[norm] if epsilon is None else float(epsilon)
        self.p_init = DEFAULT_P_INIT[norm] if p_init is None else float(p_init)
        if self.epsilon <= 0:
            raise ValueError("epsilon must be > 0")
        if not 0 < self.p_init <= 1:
            raise ValueError("p_init must lie in (0, 1]")
        if confirm < 0:
            raise ValueError("confirm must be >= 0")
        self.confirm = int(confirm)
        self.remeasure = bool(remeasure)

    # -- losses -----------------------------------------------------------------------------

    def _losses(self, probs: np.ndarray, oracle: AttackOracle) -> tuple[np.ndarray, np.ndarray]:
        """(loss, margin) per row: the margin of log-probabilities (untargeted: the loss too);
        targeted, the cross-entropy of the target and its margin over the best other class."""
        logp = log_probabilities(probs)
        cls = oracle.target if oracle.target is not None else oracle.label
        others = logp.copy()
        others[:, cls] = -np.inf
        margin = logp[:, cls] - others.max(1)
        if oracle.target is None:
            return margin, margin
        return -logp[:, cls], -margin

    def _answer(self, oracle: AttackOracle, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._losses(oracle.scores(x.astype(np.float32)), oracle)

    # -- geometry ---------------------------------------------------------------------------

    def _init_l2(self, x0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c, h, w = x0.shape
        delta = np.zeros(x0.shape)
        s = max(h // 5, 1)
        start = (h - s * 5) // 2
        top = start
        for _ in range(h // s):
            left = start
            for _ in range(w // s):
                bump = pseudo_gaussian_bump(s, rng)[None] * rng.choice([-1, 1], size=(c, 1, 1))
                delta[:, top : top + s, left : left + s] += bump
                left += s
            top += s
        return self._to_ball(x0, delta)

    def _init_linf(self, x0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c, _, w = x0.shape
        stripes = rng.choice([-self.epsilon, self.epsilon], size=(c, 1, w))
        return self._clip(x0, x0 + stripes)

    def _clip(self, x0: np.ndarray, x: np.ndarray) -> np.ndarray:
        """float32 in [0, 1] and inside the ball (float rounding included)."""
        out = np.clip(x, 0.0, 1.0).astype(np.float32)
        if self.norm == "inf":
            return np.clip(out, x0 - self.epsilon, x0 + self.epsilon).clip(0, 1).astype(np.float32)
        for _ in range(8):
            norm = float(np.linalg.norm((out - x0).astype(np.float64)))
            if norm <= self.epsilon:
                break
            out = np.clip(x0 + (out - x0) * (self.epsilon / norm * (1 - 1e-6)), 0, 1).astype(
                np.float32
            )
        return out

    def _to_ball(self, x0: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """``x0 + ε · delta / ||delta||`` clipped (the reference's rescaling; a zero delta is
        left at x0 instead of dividing by zero)."""
        norm = float(np.sqrt(np.sum(delta**2)))
        if norm == 0 or not np.isfinite(norm):
            return x0.copy()
        return self._clip(x0, x0 + delta * (self.epsilon / norm))

    def _step_l2(
        self, x0: np.ndarray, best: np.ndarray, p: float, rng: np.random.Generator
    ) -> np.ndarray:
        c, h, w = x0.shape
        delta = best.astype(np.float64) - x0
        s = max(int(round(np.sqrt(p * x0.size / c))), 3)
        if s % 2 == 0:
            s += 1
        s = min(s, h - 1, w - 1)  # the reference assumes images much larger than a window
        top, left = rng.integers(0, h - s), rng.integers(0, w - s)
        top2, left2 = rng.integers(0, h - s), rng.integers(0, w - s)
        window = (slice(None), slice(top, top + s), slice(left, left + s))
        window2 = (slice(None), slice(top2, top2 + s), slice(left2, left2 + s))
        norm_window = np.sqrt(np.sum(delta[window] ** 2, axis=(1, 2), keepdims=True))
        norm_image = float(np.sqrt(np.sum(delta**2)))
        both = np.zeros(x0.shape, bool)
        both[window] = True
        both[window2] = True
        norm_both = np.sqrt(np.sum(np.where(both, delta, 0.0) ** 2, axis=(1, 2), keepdims=True))
        new = pseudo_gaussian_bump(s, rng)[None] * rng.choice([-1, 1], size=(c, 1, 1))
        new = new + delta[window] / (1e-10 + norm_window)
        new_norm = np.maximum(np.sqrt(np.sum(new**2, axis=(1, 2), keepdims=True)), 1e-12)
        mass = np.sqrt(max(self.epsilon**2 - norm_image**2, 0.0) / c + norm_both**2)
        delta[window2] = 0.0
        delta[window] = new / new_norm * mass
        return self._to_ball(x0, delta)

    def _step_linf(
        self, x0: np.ndarray, best: np.ndarray, p: float, rng: np.random.Generator
    ) -> np.ndarray:
        c, h, w = x0.shape
        delta = best.astype(np.float64) - x0
        s = min(max(int(round(np.sqrt(p * x0.size / c))), 1), h - 1)
        top, left = rng.integers(0, h - s), rng.integers(0, w - s)
        window = (slice(None), slice(top, top + s), slice(left, left + s))
        for _ in range(1000):  # the reference loops until the window changes the incumbent
            moved = np.clip(x0[window] + delta[window], 0, 1)
            if np.any(np.abs(moved - best[window]) >= 1e-7):
                break
            delta[window] = rng.choice([-self.epsilon, self.epsilon], size=(c, 1, 1))
        return self._clip(x0, x0 + delta)

    # -- the search -------------------------------------------------------------------------

    def _confirmed(self, oracle: AttackOracle, incumbent: _Incumbent) -> bool:
        """The incumbent answered adversarial once: ask ``confirm`` fresh answers."""
        if self.confirm == 0:
            return True
        losses, margins = self._answer(oracle, np.repeat(incumbent.x[None], self.confirm, 0))
        incumbent.losses.extend(losses.tolist())
        incumbent.margins.extend(margins.tolist())
        return bool((margins <= 0).all())

    def _settle(self, oracle: AttackOracle, incumbent: _Incumbent, margin: float) -> bool:
        """After a new answer of margin ``margin`` for the incumbent: report it if it looks
        adversarial; True when the attack is done."""
        if margin > 0:
            return False
        if not incumbent.reported:
            oracle.report(incumbent.x)
            incumbent.reported = True
        return self._confirmed(oracle, incumbent)

    def run(self, oracle: AttackOracle, rng: np.random.Generator) -> None:
        x0 = oracle.x0.astype(np.float32)
        start = self._init_l2(x0, rng) if self.norm == "2" else self._init_linf(x0, rng)
        losses, margins = self._answer(oracle, start[None])
        incumbent = _Incumbent(start, [float(losses[0])], [float(margins[0])])
        if self._settle(oracle, incumbent, float(margins[0])):
            return
        per_iteration = 2 if self.remeasure else 1
        n_iters = max(oracle.remaining // per_iteration, 1)
        step = self._step_l2 if self.norm == "2" else self._step_linf
        iteration = 0
        while True:
            p = p_selection(self.p_init, iteration, n_iters)
            candidate = step(x0, incumbent.x, p, rng)
            iteration += 1
            if self.remeasure:
                losses, margins = self._answer(oracle, np.stack([incumbent.x, candidate]))
                incumbent.losses.append(float(losses[0]))
                incumbent.margins.append(float(margins[0]))
                loss, margin = float(losses[1]), float(margins[1])
                if loss >= incumbent.loss and incumbent.margins[-1] <= 0:
                    # the incumbent's fresh answer is adversarial: it may now be confirmed
                    if self._settle(oracle, incumbent, incumbent.margins[-1]):
                        return
                    continue
            else:
                losses, margins = self._answer(oracle, candidate[None])
                loss, margin = float(losses[0]), float(margins[0])
            if loss < incumbent.loss:
                incumbent = _Incumbent(candidate, [loss], [margin])
                if self._settle(oracle, incumbent, margin):
                    return


__all__ = ["SquareAttack", "p_selection", "pseudo_gaussian_bump", "pseudo_gaussian_rectangle"]
