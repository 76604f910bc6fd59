"""Any oracle as an ART classifier, so that ART's evasion attacks run against a gateway over HTTP.

ART is the Adversarial Robustness Toolbox (M.-I. Nicolae et al., "Adversarial Robustness Toolbox
v1.0.0", arXiv:1807.01069, 2018; https://github.com/Trusted-AI/adversarial-robustness-toolbox),
an optional extra here: ``pip install 'snd-gateway[parity]'`` (pinned to 1.20.1). It is imported
lazily, so importing this module never needs it.

* :class:`ArtBridge` wraps an :class:`~attacks_client.oracles.Oracle` (in practice
  :class:`~attacks_client.oracles.HttpOracle`) in an ART ``BlackBoxClassifier`` (labels: ``predict``
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
  :class:`~attacks_client.oracles.base.BudgetExhausted` is raised through ART, and
  ``attacks_client.attacks.art``'s runners turn it into ``stop_reason="budget"``.
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
from typing import Any

import numpy as np

from attacks_client.oracles.base import BudgetExhausted, Oracle, ScoresUnavailable

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the ART adapter needs the Adversarial Robustness Toolbox: pip install 'snd-gateway[parity]'"
)


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

    def __init__(
        self, oracle: Oracle, *, budget: int | None = None, scores: bool | None = None
    ) -> None:
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
                self._predict,
                input_shape=shape,
                nb_classes=oracle.num_classes,
                channels_first=True,
                clip_values=(0.0, 1.0),
            )
        else:
            self.classifier = _label_classifier_type()(
                self._predict,
                input_shape=shape,
                nb_classes=oracle.num_classes,
                clip_values=(0.0, 1.0),
            )
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


def art_classifier(oracle: Oracle, *, budget: int | None = None, scores: bool | None = None) -> Any:
    """The ART classifier of ``ArtBridge(oracle, budget=budget, scores=scores)``; its bridge (for
    the counts) is the classifier's ``bridge`` attribute."""
    return ArtBridge(oracle, budget=budget, scores=scores).classifier
