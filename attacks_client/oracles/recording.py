"""An oracle wrapper that keeps a uniform sample of the queries an attack sent and their answers.

The evaluation grid estimates P_mis = P(h(x) != h(x + eta)) over the attack's own queries (paper
Sec. 4.2, Table 5): a reservoir sample (Vitter's algorithm R) of ``capacity`` query images and
the labels the defended endpoint answered, later asked again of the noise-free reference.
"""

from __future__ import annotations

import numpy as np

from attacks_client.oracles.base import Oracle, OracleWrapper


class RecordingOracle(OracleWrapper):
    """Passes queries through and keeps a uniform sample (reservoir) of (image, answered label)."""

    def __init__(self, inner: Oracle, capacity: int, seed: int) -> None:
        super().__init__(inner)
        self.capacity = capacity
        self.images: list[np.ndarray] = []
        self.answers: list[int] = []
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    def _record(self, x: np.ndarray, labels: np.ndarray) -> None:
        for image, label in zip(np.asarray(x, np.float32), labels, strict=True):
            self._seen += 1
            if len(self.images) < self.capacity:
                self.images.append(image.copy())
                self.answers.append(int(label))
            else:
                slot = int(self._rng.integers(self._seen))
                if slot < self.capacity:
                    self.images[slot], self.answers[slot] = image.copy(), int(label)

    def labels(self, x: np.ndarray) -> np.ndarray:
        labels = self.inner.labels(x)
        self._record(x, labels)
        return labels

    def scores(self, x: np.ndarray) -> np.ndarray:
        scores = self.inner.scores(x)
        self._record(x, scores.argmax(1))
        return scores
