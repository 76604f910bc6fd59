"""The attacker's answer to stateful detection: its own noise on every query it sends.

``JitterOracle(oracle, S)`` adds fresh Gaussian noise of std ``S`` to each image before it is
sent (clipped to [0, 1]), so no two queries are bit-identical and near-duplicates drift apart
(Blacklight's fingerprint is known to break at about 2/255, Li et al. 2022, Sec. 7). It sends
exactly the images the attack asks for: each counts as one query, as always. Under
``RepeatOracle(JitterOracle(...), T)`` each of the T repeats gets its own draw. Against SND the
two noises add: the attacker's answers carry std ``sqrt(σ² + S²)``.
"""

from __future__ import annotations

import numpy as np

from attacks_client.oracles.base import Oracle, OracleWrapper


class JitterOracle(OracleWrapper):
    """Gaussian noise of std ``std`` on every image sent to ``oracle``."""

    def __init__(self, oracle: Oracle, std: float, seed: int | None = None) -> None:
        if std < 0:
            raise ValueError("jitter std must be >= 0")
        super().__init__(oracle)
        self.std = std
        self._rng = np.random.default_rng(seed)

    @property
    def query_cost(self) -> int:
        return int(getattr(self.inner, "query_cost", 1))

    def jitter(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.std == 0:
            return x
        noise = self._rng.normal(0.0, self.std, x.shape).astype(np.float32)
        return np.clip(x + noise, 0.0, 1.0)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self.inner.labels(self.jitter(x))

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.inner.scores(self.jitter(x))
