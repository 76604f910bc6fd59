"""PopSkipJump's info-max bisection: where along a segment a *noisy* classifier's answer flips.

Simon-Gabriel, Sheikh, Krause: "PopSkipJump: Decision-Based Attack for Probabilistic
Classifiers", ICML 2021 (arXiv:2106.07445). Reference code: https://github.com/cjsg/PopSkipJump,
``infomax.py`` (``get_py_txse``, ``get_alpha_``, ``get_alpha``, ``get_cos_from_n``,
``get_n_from_cos``, ``bin_search``); written anew here in numpy.

Along the segment ``(1 - x) * x_far + x * x0`` (``x = 0`` the far end, ``x = 1`` the attacked
image) the endpoint answers the true label (``y = 1``; the target's complement when targeted)
with probability

    P(y = 1 | x; t, s, eps) = eps + (1 - 2 eps) * sigma(s (x - t)),
    sigma(z) = (1 + tanh(2 z)) / 2 = 1 / (1 + exp(-4 z))

(``get_py_txse``: the reference's sigmoid has slope 1 at 0). The boundary is ``t``, where
P(true label) = 1/2: "p(true label) < 0.5 is adversarial". A posterior over a grid of
(t, s, eps) is updated after every answer; the next query goes where the mutual information
between its answer and (t, s, eps) is largest (acquisition ``'I(y,t,s,e)'``); the search stops
when the maximum-a-posteriori (t, log10 s, eps) has not moved by more than a grid step over
``window`` queries (``stop_criteria = 'estimate_fluctuation'``). The estimated s and eps also
give the number of gradient queries that reach the expected cosine HSJA's own number would reach
on a deterministic classifier (``get_cos_from_n`` / ``get_n_from_cos``).

Departures: the stop rule is checked before a step's query instead of after it (the reference
sends one query whose answer the estimate it returns never sees: same estimates, one query less
per search; where ``kmax`` steps run out first, the estimate does see the last answer); the
expected-n table ``n_tsez`` only feeds the reference's logs and other stop rules and is not
computed; the likelihood tables are float32 (the reference computes in float32 throughout).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import entr

CLIP = 1e-7  # bin_search: the posterior is clamped to [1e-7, 1 - 1e-7] before each step
LOG_S = (-1.0, 2.0)  # s in [0.1, 100] (log-spaced, 31 values), eps in [0, 0.3] (7 values)
S_POINTS = 30
EPS = (0.0, 0.3)
E_POINTS = 7
WINDOW = 10  # bin_search's window_size
MAX_STEPS = 5000  # bin_search's kmax

Ask = Callable[[np.ndarray], np.ndarray]
"""Blend weights ``x`` (k,) -> boolean ``y`` (k,): True where the endpoint answered the true
label (not adversarial); one oracle request per call."""


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """The reference's sigmoid, ``(1 + tanh(2 z)) / 2``."""
    return np.asarray(0.5 * np.tanh(2.0 * np.asarray(z, np.float64)) + 0.5)


def p_true(
    x: np.ndarray | float, t: np.ndarray | float, s: np.ndarray | float, eps: np.ndarray | float
) -> np.ndarray:
    """``P(y = 1 | x; t, s, eps)`` (``get_py_txse`` with y = 1)."""
    eps = np.asarray(eps, np.float64)
    return np.asarray(eps + (1.0 - 2.0 * eps) * sigmoid(np.asarray(s) * (np.asarray(x) - t)))


def alpha(s: float, theta: float, delta: float, d: int, eps: float) -> float:
    """``get_alpha``: ``E[Y Z]`` where a probe's component along the gradient is ``a Z`` (Z
    standard normal, ``a = delta / sqrt(d)``: a probe of norm delta in d dimensions), its
    answer ``Y = +-1`` follows a sigmoid of inverse scale ``s`` centred ``theta`` away (in its
    ramp approximation: slope ``s`` over a width ``1 / s``; ``s = inf`` a step) and flips with
    probability ``eps`` at either end."""
    s_ = s * delta / math.sqrt(d)
    th = theta * math.sqrt(d) / delta
    if math.isinf(s_):
        value = math.sqrt(2.0 / math.pi) * math.exp(-(th**2) / 2.0)
    else:
        half = 1.0 / (2.0 * s_)
        value = s_ * (
            math.erf((th + half) / math.sqrt(2.0)) - math.erf((th - half) / math.sqrt(2.0))
        )
    return (1.0 - 2.0 * eps) * value


def cos_from_n(
    n: float,
    s: float = math.inf,
    theta: float = 0.0,
    delta: float = 1.0,
    d: int = 10,
    eps: float = 0.0,
) -> float:
    """``get_cos_from_n``: ``E[cos(estimate, gradient)] = 1 / sqrt(1 + (d - 1) / (n alpha^2))``."""
    a = alpha(s, theta, delta, d, eps)
    return 0.0 if a == 0 else 1.0 / math.sqrt(1.0 + (d - 1) / (n * a**2))


def n_from_cos(
    cos: float,
    s: float = math.inf,
    theta: float = 0.0,
    delta: float = 1.0,
    d: int = 10,
    eps: float = 0.0,
) -> float:
    """``get_n_from_cos``, the inverse: ``n = (d - 1) cos^2 / (alpha^2 (1 - cos^2))``."""
    a = alpha(s, theta, delta, d, eps)
    return math.inf if a == 0 else (d - 1) * cos**2 / (a**2 * (1.0 - cos**2))


@dataclass(frozen=True)
class Estimate:
    """What one info-max search found: the MAP sigmoid and the gradient queries it calls for."""

    t: float
    s: float
    eps: float
    n: float
    queries: int
    converged: bool


@dataclass(frozen=True)
class Grid:
    """The (t, log10 s, eps) hypotheses as ``(low, high, points)`` each, and ``grid_size``: the
    query locations are ``linspace(0, 1, grid_size + 1)``."""

    t_range: tuple[float, float, int]
    log_s_range: tuple[float, float, int]
    eps_range: tuple[float, float, int]
    grid_size: int

    @property
    def t(self) -> np.ndarray:
        return np.linspace(*self.t_range)

    @property
    def s(self) -> np.ndarray:
        return np.logspace(*self.log_s_range)

    @property
    def eps(self) -> np.ndarray:
        return np.linspace(*self.eps_range)

    @property
    def x(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.grid_size + 1)

    @property
    def tolerance(self) -> tuple[float, float, float]:
        """The stop rule's ``((t_hi - t_lo) / Nt, (s_hi - s_lo) / Ns, (e_hi - e_lo) / Ne)``,
        s in log10: a little under one grid step, so the MAP must stand still."""
        lo_hi_n = (self.t_range, self.log_s_range, self.eps_range)
        tolerance = tuple((high - low) / n for low, high, n in lo_hi_n)
        return tolerance[0], tolerance[1], tolerance[2]


def search_grid(grid_size: int, previous: Estimate | None = None, prior_frac: float = 1.0) -> Grid:
    """``bin_search``'s grids: the first search spans t in [0, 1] (``grid_size + 1`` values), s
    and eps in full; later ones centre t and log10 s on the previous estimate (``prior_frac`` of
    the range each side; the default 1 keeps them full, with t twice as fine) and fix eps."""
    if previous is None:
        return Grid(
            (0.0, 1.0, grid_size + 1),
            (LOG_S[0], LOG_S[1], S_POINTS + 1),
            (EPS[0], EPS[1], E_POINTS),
            grid_size,
        )
    log_s, span = math.log10(previous.s), prior_frac * (LOG_S[1] - LOG_S[0])
    return Grid(
        (
            max(previous.t - prior_frac, 0.0),
            min(previous.t + prior_frac, 1.0),
            int(grid_size * 2 * prior_frac) + 1,
        ),
        (max(log_s - span, LOG_S[0]), min(log_s + span, LOG_S[1]), int(prior_frac * S_POINTS) + 1),
        (previous.eps, previous.eps, 1),
        grid_size,
    )


class SigmoidModel:
    """The likelihood table of a grid: ``P(y = 1 | x, t, s, eps)`` for every query location
    (rows) and hypothesis (columns, flattened in (t, s, eps) order), and its binary entropy;
    float32, built once per grid (later searches share theirs)."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.x = grid.x
        t, s, eps = np.meshgrid(grid.t, grid.s, grid.eps, indexing="ij")
        self.t, self.s, self.eps = t.ravel(), s.ravel(), eps.ravel()
        likelihood = p_true(self.x[:, None], self.t[None], self.s[None], self.eps[None])
        self.entropy = (entr(likelihood) + entr(1.0 - likelihood)).astype(np.float32)
        self.likelihood = likelihood.astype(np.float32)


class SigmoidPosterior:
    """The posterior over a model's (t, s, eps), uniform at first (``bin_search``'s prior
    ``pt * ps * pe``)."""

    def __init__(self, model: SigmoidModel) -> None:
        self.model = model
        self.t, self.s, self.eps = model.t, model.s, model.eps
        self.weights = np.full(self.t.size, 1.0 / self.t.size)

    def clamp(self) -> None:
        """Clamp to [1e-7, 1 - 1e-7] and renormalize (every step of ``bin_search``)."""
        self.weights = np.clip(self.weights, CLIP, 1.0 - CLIP)
        self.weights /= self.weights.sum()

    def map_estimate(self) -> tuple[float, float, float]:
        """The maximum a posteriori (t, s, eps) (first of equal maxima, as ``argmax``)."""
        i = int(np.argmax(self.weights))
        return float(self.t[i]), float(self.s[i]), float(self.eps[i])

    def information_gain(self) -> np.ndarray:
        """``I(y; t, s, eps | x)`` at every query location: ``H(y | x) - E[H(y | x, t, s, eps)]``
        (the reference's ``Hy + Htse - Hytse``)."""
        weights = self.weights.astype(np.float32)
        # einsum's own loop: a threaded BLAS gemv of this size is slower on a busy machine
        py = np.einsum("ij,j->i", self.model.likelihood, weights).astype(np.float64)
        expected = np.einsum("ij,j->i", self.model.entropy, weights).astype(np.float64)
        return np.asarray(entr(py) + entr(1.0 - py) - expected)

    def update(self, index: np.ndarray, answers: np.ndarray) -> None:
        """Bayes' rule after the answers ``y`` at the query locations ``x[index]``."""
        rows = self.model.likelihood[index].astype(np.float64)
        answers = np.asarray(answers, bool)[:, None]
        self.weights = self.weights * np.prod(np.where(answers, rows, 1.0 - rows), axis=0)
        self.weights /= self.weights.sum()

    def adversarial_probability(self, x: float) -> float:
        """Posterior mean of ``1 - sigma(s (x - t))``: the probability that x lies on the
        adversarial side of the sigmoid, without the eps floor and ceiling."""
        return float(self.weights @ (1.0 - sigmoid(self.s * (x - self.t))))

    def last_confident(self, level: float, tol: float = 1e-4) -> float | None:
        """The largest x (nearest x0) whose ``adversarial_probability`` is at least ``level``,
        to ``tol``; None where not even the far end x = 0 reaches it."""
        if self.adversarial_probability(0.0) < level:
            return None
        low, high = 0.0, 1.0
        if self.adversarial_probability(high) >= level:
            return high
        while high - low > tol:
            mid = (low + high) / 2.0
            if self.adversarial_probability(mid) >= level:
                low = mid
            else:
                high = mid
        return low


def _settled(
    history: list[tuple[float, float, float]], tolerance: tuple[float, ...], window: int
) -> bool:
    """``'estimate_fluctuation'``: over the last ``window + 1`` MAP estimates no step in t,
    log10 s or eps exceeds its tolerance."""
    if len(history) <= window + 1:
        return False
    last = np.array(history[-(window + 1) :])
    last[:, 1] = np.log10(last[:, 1])
    moves = np.abs(np.diff(last, axis=0)).max(axis=0)
    return bool(np.all(moves <= np.asarray(tolerance)))


def info_max_search(
    ask: Ask,
    rng: np.random.Generator,
    model: SigmoidModel,
    *,
    target_cos: float,
    d: int,
    queries_per_step: int = 1,
    max_steps: int = MAX_STEPS,
    window: int = WINDOW,
) -> tuple[Estimate, SigmoidPosterior]:
    """``bin_search`` with ``acq_func='I(y,t,s,e)'`` and ``stop_criteria='estimate_fluctuation'``.

    Step k asks ``min(k // 2 + 1, queries_per_step)`` locations in one request, drawn among
    those whose information gain is the maximum (at least 0.9 of it when more than one).
    The returned ``n`` is ``get_n_from_cos(target_cos, theta=1/grid_size,
    delta=sqrt(d)/grid_size)`` at the MAP s and eps: the gradient queries, probing at radius
    ``dist * sqrt(d) / grid_size``, that reach ``target_cos``."""
    grid = model.grid
    posterior = SigmoidPosterior(model)
    history: list[tuple[float, float, float]] = []
    spent = 0
    converged = False
    for k in range(max_steps // queries_per_step):
        posterior.clamp()
        history.append(posterior.map_estimate())
        if _settled(history, grid.tolerance, window):
            converged = True
            break
        count = min(k // 2 + 1, queries_per_step)
        gain = posterior.information_gain()
        floor = 0.9 * gain.max() if count > 1 else gain.max()
        top = np.flatnonzero(gain >= floor)
        index = top[rng.integers(len(top), size=count)]
        answers = ask(model.x[index])
        spent += count
        posterior.update(index, answers)
    else:
        posterior.clamp()
        history.append(posterior.map_estimate())
    t, s, eps = history[-1]
    size = grid.grid_size
    n = n_from_cos(target_cos, s=s, theta=1.0 / size, delta=math.sqrt(d) / size, d=d, eps=eps)
    return Estimate(t, s, eps, n, spent, converged), posterior
