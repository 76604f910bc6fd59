"""Any oracle as an ART classifier, so that ART's evasion attacks run against a gateway over HTTP.

ART is the Adversarial Robustness Toolbox (M.-I. Nicolae et al., "Adversarial Robustness Toolbox
v1.0.0", arXiv:1807.01069, 2018; https://github.com/Trusted-AI/adversarial-robustness-toolbox),
an optional extra here: ``pip install 'snd-gateway[parity]'`` (pinned to 1.20.1). It is imported
lazily, so importing this module never needs it.

* :class:`ArtBridge` wraps an :class:`~attacks_client.oracle.Oracle` (in practice
  :class:`~attacks_client.http.HttpOracle`) in an ART ``BlackBoxClassifier`` (labels: ``predict``
  answers one-hot float32 rows) or, for an oracle with scores, a ``BlackBoxClassifierNeuralNetwork``
  (``predict`` answers the oracle's probabilities). Both are channels first with
  ``clip_values=(0, 1)``. HopSkipJump, BoundaryAttack, SignOPTAttack and GeoDA accept either
  (their ``_estimator_requirements`` are ``(BaseEstimator, ClassifierMixin)``; GeoDA also reads
  ``channels_first``, which the label classifier states); SimBA needs
  ``NeuralNetworkMixin`` and probabilities, i.e. a scores oracle.
* What counts: every image of every ART ``predict`` call is sent (as float32 clipped to [0, 1],
  one oracle call per call of the classifier's ``predict_fn``; ART splits a ``predict`` into
  ``batch_size`` chunks) and counted. :attr:`ArtBridge.queries` is the oracle's count over the
  bridge's calls, so for an ``HttpOracle`` it equals the server's (``X-Queries-Used``). ART's own
  bookkeeping queries count too: e.g. HopSkipJump's ``generate`` predicts x (twice if no ``y``
  is given) and, in its closing success log, x and the result once more.
* Budget: a chunk that would cross :attr:`ArtBridge.budget` is not sent;
  :class:`~attacks_client.oracle.BudgetExhausted` is raised through ART, and
  :func:`run_art_attack` / :func:`run_hsja_iterations` turn it into ``stop_reason="budget"``.
* NumPy 2: ART 1.20.1's GeoDA calls ``np.mat``, which NumPy 2 removed; :func:`numpy2_shims`
  restores the alias (applied whenever a bridge is built).

ART 1.20.1 behaviours worth knowing: HopSkipJump draws its start from uniform noise
(``init_size`` tries) and returns x unchanged when none is adversarial, so it cannot attack an
image of the class the model gives noise; GeoDA's start search (x plus ever larger Gaussian
noise) has no bound and never ends for such an image, so give GeoDA a budget; GeoDA needs
``max_iter > 250`` and fails on a few sizes above (:func:`art_geoda` picks one that works),
and caches its DCT basis as ``2d_dct_basis_<sub_dim>_<size>.npy`` in the working directory.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from attacks_client.oracle import BudgetExhausted, Oracle, ScoresUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = ("the ART adapter needs the Adversarial Robustness Toolbox: "
                "pip install 'snd-gateway[parity]'")
StopReason = Literal["converged", "budget"]
HsjaStopReason = Literal["converged", "budget", "no_start"]


def numpy2_shims() -> None:
    """Restore the NumPy 1 names ART 1.20.1 still uses: ``np.mat`` (GeoDA's DCT basis), an alias
    of ``np.asmatrix`` that NumPy 2 removed. Idempotent; a no-op on NumPy 1."""
    if not hasattr(np, "mat"):
        np.mat = np.asmatrix  # type: ignore[attr-defined]


def _art_classes() -> tuple[Any, Any]:
    """ART's ``(BlackBoxClassifier, BlackBoxClassifierNeuralNetwork)``; a clear ImportError
    naming the extra when ART is missing."""
    try:
        from art.estimators.classification import (
            BlackBoxClassifier,
            BlackBoxClassifierNeuralNetwork,
        )
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    numpy2_shims()
    return BlackBoxClassifier, BlackBoxClassifierNeuralNetwork


@functools.cache
def _label_classifier_type() -> Any:
    """ART's ``BlackBoxClassifier`` stating its (channels-first) layout: GeoDA reads
    ``estimator.channels_first``, which only ``NeuralNetworkMixin`` defines in ART 1.20.1."""
    black_box, _ = _art_classes()

    class LabelBlackBoxClassifier(black_box):  # type: ignore[misc, valid-type]
        """A label-only ``BlackBoxClassifier`` (one-hot rows), channels first."""

        @property
        def channels_first(self) -> bool:
            return True

    return LabelBlackBoxClassifier


class ArtBridge:
    """An oracle seen by ART, with exact counts and a clean stop at an optional budget.

    ``bridge.classifier`` is the ART estimator to hand to an attack; ``bridge.queries`` counts
    the oracle's queries spent through it (every image ART asked for and got an answer to),
    ``bridge.requests`` the ``predict_fn`` calls forwarded to the oracle (an ``HttpOracle``
    sends one or more HTTP requests per call, split at the server's batch limit). ``scores``:
    ``None`` follows ``oracle.has_scores``; ``False`` gives a label classifier over a scores
    oracle; ``True`` over a label-only oracle is :class:`ScoresUnavailable`.
    """

    def __init__(self, oracle: Oracle, *, budget: int | None = None,
                 scores: bool | None = None) -> None:
        if budget is not None and budget < 0:
            raise ValueError("budget must be non-negative")
        if scores and not oracle.has_scores:
            raise ScoresUnavailable("scores asked of an oracle that answers labels only")
        self.oracle = oracle
        self.budget = budget
        self.scores = oracle.has_scores if scores is None else scores
        self.queries = 0
        self.requests = 0
        shape = tuple(int(d) for d in oracle.input_shape)
        if self.scores:
            _, neural_network = _art_classes()
            self.classifier: Any = neural_network(
                self._predict, input_shape=shape, nb_classes=oracle.num_classes,
                channels_first=True, clip_values=(0.0, 1.0))
        else:
            self.classifier = _label_classifier_type()(
                self._predict, input_shape=shape, nb_classes=oracle.num_classes,
                clip_values=(0.0, 1.0))
        self.classifier.bridge = self

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries

    def _predict(self, x: np.ndarray) -> np.ndarray:
        """ART's ``predict_fn``: one oracle call for the whole chunk, or nothing and
        ``BudgetExhausted`` if it does not fit."""
        batch = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
        batch = np.ascontiguousarray(batch.reshape(-1, *self.oracle.input_shape))
        n = len(batch)
        if n == 0:
            return np.zeros((0, self.oracle.num_classes), np.float32)
        if self.budget is not None and self.queries + n > self.budget:
            raise BudgetExhausted(f"ART asked for {n} images, {self.budget - self.queries} left")
        before = self.oracle.queries
        try:
            if self.scores:
                return np.asarray(self.oracle.scores(batch), dtype=np.float32)
            labels = np.asarray(self.oracle.labels(batch), dtype=np.int64)
            return np.eye(self.oracle.num_classes, dtype=np.float32)[labels]
        finally:  # the oracle's own count: exact even if it refused part of a split batch
            sent = self.oracle.queries - before
            self.queries += sent
            self.requests += int(sent > 0)


def art_classifier(oracle: Oracle, *, budget: int | None = None,
                   scores: bool | None = None) -> Any:
    """The ART classifier of ``ArtBridge(oracle, budget=budget, scores=scores)``; its bridge (for
    the counts) is the classifier's ``bridge`` attribute."""
    return ArtBridge(oracle, budget=budget, scores=scores).classifier


def art_geoda(classifier: Any, *, max_iter: int = 4000, **params: Any) -> Any:
    """ART's ``GeoDA`` (Rahmati et al. 2020) on ``classifier``, with :func:`numpy2_shims` applied
    and ``max_iter`` (its query plan) lowered to the nearest size ART 1.20.1 can plan: its
    constructor fails for ``max_iter <= 250`` (``IndexError``: no iterations) and for some larger
    sizes (``RecursionError``: 269-291, 378-379, 453-454 among those up to 5,000).
    ``ValueError`` if no size from 251 to ``max_iter`` works. ``params`` go to ``GeoDA``."""
    try:
        from art.attacks.evasion import GeoDA
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    numpy2_shims()
    for size in range(max_iter, 250, -1):
        try:
            attack = GeoDA(classifier, max_iter=size, **params)
        except (IndexError, RecursionError):
            continue
        if size != max_iter:
            log.info("GeoDA cannot plan max_iter=%d; using %d", max_iter, size)
        return attack
    raise ValueError(f"ART's GeoDA cannot plan max_iter={max_iter}: it needs more than 250")


@dataclass(frozen=True)
class ArtRunResult:
    """One ART attack on one image: the adversarial candidate ART returned (``None`` when it
    stopped at the budget or returned x0 unchanged, its way of saying it found nothing), the
    bridge's queries and requests during the run, why it stopped and the wall time in seconds.
    The candidate is not judged: ask another oracle (an evaluator key) whether it is
    misclassified."""

    adversarial: np.ndarray | None
    queries: int
    requests: int
    stop_reason: StopReason
    wall_time: float


def _one_hot(label: int, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[[int(label)]]


def run_art_attack(attack: Any | Callable[[Any], Any], x0: np.ndarray, label: int | None,
                   bridge: ArtBridge, **generate_kwargs: Any) -> ArtRunResult:
    """Run an ART evasion attack on one image ``x0`` ``(C, H, W)`` through ``bridge``.

    ``attack`` is an ART attack built on ``bridge.classifier`` or a factory
    ``classifier -> attack``. ``label`` is passed as a one-hot ``y`` (x0's true label for an
    untargeted attack, the target for a targeted one); ``None`` lets ART predict it (queries).
    ``generate_kwargs`` go to ``attack.generate``.
    """
    art_attack: Any = attack if hasattr(attack, "generate") else attack(bridge.classifier)
    if art_attack.estimator is not bridge.classifier:
        raise ValueError("the attack's estimator is not bridge.classifier: it would not be counted")
    x = np.asarray(x0, dtype=np.float32)[None]
    y = None if label is None else _one_hot(label, bridge.oracle.num_classes)
    queries, requests, start = bridge.queries, bridge.requests, time.perf_counter()
    adversarial: np.ndarray | None = None
    stop: StopReason = "converged"
    try:
        out = np.asarray(art_attack.generate(x, y=y, **generate_kwargs), dtype=np.float32)[0]
        if not np.array_equal(out, x[0]):
            adversarial = out
    except BudgetExhausted as exc:
        log.info("%s stopped at the budget: %s", type(art_attack).__name__, exc)
        stop = "budget"
    return ArtRunResult(adversarial, bridge.queries - queries, bridge.requests - requests, stop,
                        time.perf_counter() - start)


@dataclass(frozen=True)
class HsjaRun:
    """ART's HopSkipJump run one iteration at a time. ``updates``: ``(queries, candidate)`` after
    each completed iteration (queries of the bridge since the run began, ART's current sample);
    ``stop_reason``: ``"converged"`` (all iterations done), ``"budget"`` (the last, incomplete
    iteration's queries are spent, its candidate dropped) or ``"no_start"`` (ART found no
    adversarial start and returned x unchanged)."""

    updates: list[tuple[int, np.ndarray]] = field(default_factory=list)
    queries: int = 0
    stop_reason: HsjaStopReason = "converged"
    wall_time: float = 0.0

    @property
    def final_candidate(self) -> np.ndarray | None:
        return self.updates[-1][1] if self.updates else None


def run_hsja_iterations(bridge: ArtBridge, x0: np.ndarray, label: int | None = None, *,
                        iterations: int = 50, max_eval: int = 10000, init_eval: int = 100,
                        init_size: int = 100, batch_size: int = 64,
                        norm: int | float | str = 2) -> HsjaRun:
    """ART's ``HopSkipJump`` (Chen, Jordan and Wainwright 2020) on ``x0``, untargeted, with a
    checkpoint after every iteration; stops after ``iterations`` or at the bridge's budget.

    Built as ``HopSkipJump(classifier, max_iter=1, ...)``: the first ``generate`` call finds a
    start and runs iteration 1; each next call is ``generate(x, y, x_adv_init=candidate,
    resume=True)``, which continues ART's ``curr_iter`` (the gradient-estimate size grows with
    it as in a single run). ART's cost of this mode, counted like every query: each resumed call
    predicts x and x_adv_init once more, and every call's closing success log predicts the result
    and x again: each resumed call costs 4 queries that a single ``max_iter=iterations`` run
    (which pays the closing 2 once) does not; ``label=None`` adds one more per call. Untargeted,
    ART leaves its own prediction of x (``label`` only saves that query); if a resumed call's
    ``x_adv_init`` is no longer adversarial to the oracle (a noisy defense may flip it), ART
    silently draws a fresh random start.
    """
    try:
        from art.attacks.evasion import HopSkipJump
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    attack = HopSkipJump(bridge.classifier, batch_size=batch_size, norm=norm, max_iter=1,
                         max_eval=max_eval, init_eval=init_eval, init_size=init_size,
                         verbose=False)
    x = np.asarray(x0, dtype=np.float32)[None]
    y = None if label is None else _one_hot(label, bridge.oracle.num_classes)
    base, start = bridge.queries, time.perf_counter()
    updates: list[tuple[int, np.ndarray]] = []
    stop: HsjaStopReason = "converged"
    try:
        for _ in range(iterations):
            if updates:
                out = attack.generate(x, y=y, x_adv_init=updates[-1][1][None].copy(),
                                      resume=True)
            else:
                out = attack.generate(x, y=y)
            candidate = np.asarray(out, dtype=np.float32)[0]
            if np.array_equal(candidate, x[0]):
                log.info("HopSkipJump found no adversarial start after %d iterations",
                         len(updates))
                stop = "no_start"
                break
            updates.append((bridge.queries - base, candidate))
    except BudgetExhausted as exc:
        log.info("HopSkipJump stopped at the budget after %d iterations: %s", len(updates), exc)
        stop = "budget"
    return HsjaRun(updates, bridge.queries - base, stop, time.perf_counter() - start)
