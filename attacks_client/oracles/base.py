"""Oracles: the only view an attack has of the model.

An oracle answers batches ``(N, C, H, W)`` of float32 pixels in [0, 1] with labels (and, in
score mode, probabilities). Every image sent is one query. ``HttpOracle``
(:mod:`attacks_client.oracles.http`) talks to a ``/predict`` endpoint; ``FunctionOracle`` wraps
an in-process function (for benchmarks and unit tests of the attacks themselves).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """``log p`` in float64, a probability of exactly 0 read as the smallest positive double
    (so margins stay finite)."""
    return np.log(np.maximum(np.asarray(probs, np.float64), np.finfo(np.float64).tiny))


class BudgetExhausted(Exception):
    """The query budget is spent: by the client's own count, or the server's refusal with code
    ``budget_exhausted`` (a 429 without a code, from a foreign server)."""


class Refused(BudgetExhausted):
    """The server stopped answering this caller: throttled (429) or suspended (403) by stateful
    detection, codes ``throttled`` and ``suspended``."""


class BatchTooLarge(Exception):
    """The server refused a batch over its limit (413; nothing charged): re-chunk and resend."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class ScoresUnavailable(Exception):
    """A score-based attack met an endpoint that answers labels only (code ``label_only``)."""


class OracleError(RuntimeError):
    """The endpoint failed in a way an attack cannot recover from (down, auth, bad model)."""


class Oracle(Protocol):
    """A black-box classifier. ``queries`` counts every image ever sent."""

    input_shape: tuple[int, int, int]
    num_classes: int

    @property
    def queries(self) -> int:
        """Images sent so far."""
        ...

    @property
    def has_scores(self) -> bool: ...

    def labels(self, x: np.ndarray) -> np.ndarray:
        """Top-1 labels ``(N,)`` of a batch; costs N queries."""
        ...

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, classes)``; costs N queries; ``ScoresUnavailable`` if label-only."""
        ...


class FunctionOracle:
    """An in-process oracle over ``predict(x) -> probabilities``; counts like ``HttpOracle``."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        scores: bool = True,
    ) -> None:
        self._predict = predict
        self.input_shape = input_shape
        self.num_classes = num_classes
        self._scores = scores
        self.queries = 0

    @property
    def has_scores(self) -> bool:
        return self._scores

    def scores(self, x: np.ndarray) -> np.ndarray:
        if not self._scores:
            raise ScoresUnavailable("this oracle answers labels only")
        self.queries += len(x)
        return np.asarray(self._predict(np.ascontiguousarray(x, dtype=np.float32)))

    def labels(self, x: np.ndarray) -> np.ndarray:
        self.queries += len(x)
        probs = np.asarray(self._predict(np.ascontiguousarray(x, dtype=np.float32)))
        return probs.argmax(1)


class OracleWrapper:
    """Base of oracles that sit in front of another (recording, repeating): shape, classes,
    query count and score mode are the inner oracle's; subclasses override what they change."""

    def __init__(self, inner: Oracle) -> None:
        self.inner = inner
        self.input_shape = inner.input_shape
        self.num_classes = inner.num_classes

    @property
    def queries(self) -> int:
        return self.inner.queries

    @property
    def has_scores(self) -> bool:
        return self.inner.has_scores

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self.inner.labels(x)

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.inner.scores(x)
