"""RecordingOracle: a uniform (reservoir) sample of an attack's queries and their answers."""

from __future__ import annotations

import numpy as np

from attacks_client.oracles import FunctionOracle, RecordingOracle


def test_recording_oracle_keeps_a_uniform_sample() -> None:
    inner = FunctionOracle(lambda x: np.eye(10)[np.zeros(len(x), int)], (1, 2, 2), 10)
    recording = RecordingOracle(inner, capacity=50, seed=0)
    for i in range(100):
        recording.labels(np.full((10, 1, 2, 2), i / 100, np.float32))
    assert len(recording.images) == 50 and recording.queries == 1000
    seen = sorted({round(float(x.mean()) * 100) for x in recording.images})
    assert seen[0] < 30 and seen[-1] > 70  # early and late queries both sampled
