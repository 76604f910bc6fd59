"""The adaptive (expectation) attack of the paper, Sec. 3.4 and 4.2 (Tables 4 and 6).

``RepeatOracle(oracle, T)`` answers each logical query with T real queries of the same image,
sent in one batch: the majority label, or the mean of the scores (``mean="probabilities"``) or
of the log-probabilities (``mean="log-probabilities"``: the answer is the renormalized
geometric mean, whose log-probability margins are the mean log-probability margins; the Square
Attack's expectation). Each logical query costs T, which the attack base class charges against
the budget (``query_cost``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from attacks_client.oracles.base import Oracle, OracleWrapper, log_probabilities


class RepeatOracle(OracleWrapper):
    """Expectation over T draws of a randomized endpoint; costs T queries per image."""

    def __init__(
        self,
        oracle: Oracle,
        repeats: int,
        *,
        mean: Literal["probabilities", "log-probabilities"] = "probabilities",
    ) -> None:
        if repeats < 1:
            raise ValueError("repeats must be >= 1")
        if mean not in ("probabilities", "log-probabilities"):
            raise ValueError("mean must be 'probabilities' or 'log-probabilities'")
        super().__init__(oracle)
        self.repeats = repeats
        self.mean = mean

    @property
    def query_cost(self) -> int:
        return self.repeats * getattr(self.inner, "query_cost", 1)

    def _repeat(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(np.asarray(x, dtype=np.float32), self.repeats, axis=0)

    def labels(self, x: np.ndarray) -> np.ndarray:
        if self.repeats == 1:
            return self.inner.labels(x)
        votes = self.inner.labels(self._repeat(x)).reshape(len(x), self.repeats)
        counts = np.zeros((len(x), self.num_classes), np.int64)
        np.add.at(counts, (np.arange(len(x))[:, None], votes), 1)
        return counts.argmax(1)  # ties go to the smallest label

    def scores(self, x: np.ndarray) -> np.ndarray:
        if self.repeats == 1:
            return self.inner.scores(x)
        probs = self.inner.scores(self._repeat(x))
        if self.mean == "log-probabilities":
            mean_logp = log_probabilities(probs).reshape(len(x), self.repeats, -1).mean(1)
            mean_logp -= mean_logp.max(1, keepdims=True)
            geometric = np.exp(mean_logp)
            return (geometric / geometric.sum(1, keepdims=True)).astype(np.float32)
        # summed in float64: exact for float32 answers, so T equal answers average to themselves
        mean = probs.reshape(len(x), self.repeats, -1).mean(1, dtype=np.float64)
        return mean.astype(np.float32)
