"""``JitterOracle``: the attacker's own noise on every query, counted like any query."""

from __future__ import annotations

import numpy as np
import pytest

from attacks_client.oracles import FunctionOracle, JitterOracle, RepeatOracle


class Recorder:
    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.sent.append(x.copy())
        probs = np.zeros((len(x), 10), np.float32)
        probs[:, 3] = 1.0
        return probs


def oracle() -> tuple[FunctionOracle, Recorder]:
    recorder = Recorder()
    return FunctionOracle(recorder, (1, 8, 8), 10), recorder


def test_every_query_gets_fresh_noise_of_the_given_std() -> None:
    inner, recorder = oracle()
    jitter = JitterOracle(inner, 0.05, seed=1)
    x = np.full((400, 1, 8, 8), 0.5, np.float32)
    assert (jitter.labels(x) == 3).all()
    assert inner.queries == jitter.queries == 400  # nothing extra sent
    noise = recorder.sent[0] - x
    assert noise.std() == pytest.approx(0.05, rel=0.03)
    assert len({row.tobytes() for row in recorder.sent[0]}) == 400


def test_noise_is_clipped_to_the_pixel_range_and_zero_sends_as_is() -> None:
    inner, recorder = oracle()
    JitterOracle(inner, 0.5, seed=2).scores(np.zeros((50, 1, 8, 8), np.float32))
    assert recorder.sent[0].min() >= 0.0 and recorder.sent[0].max() <= 1.0
    x = np.full((2, 1, 8, 8), 0.25, np.float32)
    JitterOracle(inner, 0.0).labels(x)
    assert np.array_equal(recorder.sent[1], x)
    with pytest.raises(ValueError, match=">= 0"):
        JitterOracle(inner, -0.1)


def test_with_repeat_each_repeat_is_its_own_draw() -> None:
    inner, recorder = oracle()
    adaptive = RepeatOracle(JitterOracle(inner, 0.01, seed=3), 5)
    assert adaptive.query_cost == 5
    adaptive.labels(np.full((2, 1, 8, 8), 0.5, np.float32))
    assert inner.queries == 10
    assert len({row.tobytes() for row in recorder.sent[0]}) == 10
