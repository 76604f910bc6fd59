"""ART in-process, for the speed comparison: the embedded ResNet-20 without defense as a plain
function, no HTTP (what ART users usually run), behind the same :class:`NonFiniteGuard`."""

from __future__ import annotations

import signal
import time
from functools import cache
from typing import Any

import numpy as np
import torch

from attacks_client.oracles.base import FunctionOracle
from benchmarks.parity.jobs import Job, NonFiniteGuard, TimeLimit, _alarm, make_record, seed_art


@cache
def _network() -> torch.nn.Module:
    from service.models.registry import get_spec

    torch.set_num_threads(1)
    return get_spec("resnet20-mnist").build()


def _predict(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(_network()(torch.from_numpy(x)), 1).numpy()


def run_inprocess(job: Job, url: str, image: np.ndarray) -> dict[str, Any]:
    """``run_job`` for ``art-inprocess``: the same record, the oracle a local function."""
    from benchmarks.parity.art_runs import run_art

    _network()  # load before the clock starts
    network = FunctionOracle(_predict, tuple(image.shape), 10)  # type: ignore[arg-type]
    oracle = NonFiniteGuard(network, job.label)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, job.time_limit)
    start = time.perf_counter()
    try:
        seed_art(job.seed)
        candidate, stop, started = run_art(job.attack, oracle, image, job.label, job.budget)
    except TimeLimit:
        candidate, stop, started = None, "time-limit", True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    return make_record(
        job, image, candidate, oracle.queries, stop, started, seconds, oracle.nonfinite
    )
