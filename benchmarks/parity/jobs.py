"""One parity run: one attack implementation (ours or ART's) on one image of one endpoint.

A run happens in a worker process's main thread, so that a per-run time limit (``SIGALRM``)
can interrupt ART code that loops without querying (GeoDA's query planning once hung here).
Both implementations see the oracle through a :class:`NonFiniteGuard`, which counts (and does
not send) the non-finite images an attack asks about.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np

from attacks_client.attacks import get_attack
from attacks_client.attacks.square import DEFAULT_EPSILON
from attacks_client.oracles.base import BudgetExhausted, Oracle, OracleWrapper
from attacks_client.oracles.http import HttpOracle

# the SND paper's decision attacks ran ART (App. B.1); for the others ART is a second reference
ATTACKS = (
    "hsja",
    "boundary",
    "sign-opt",
    "geoda",
    "simba",
    "simba-dct",
    "square-l2",
    "square-linf",
)
SCORE_ATTACKS = {"simba", "simba-dct", "square-l2", "square-linf"}
OURS: dict[str, tuple[str, dict[str, Any]]] = {
    "square-l2": ("square", {"norm": "2", "epsilon": DEFAULT_EPSILON["2"]}),
    "square-linf": ("square", {"norm": "inf", "epsilon": DEFAULT_EPSILON["inf"]}),
}
"""Harness names that are one of our registry's attacks with parameters (the rest: itself)."""


class NonFiniteGuard(OracleWrapper):
    """The oracle of one parity run, counting the non-finite images it is asked to predict.

    The gateway refuses a batch with a NaN or infinite pixel (422, which would end the run with
    an error). Such an image (ART 1.20.1's L2 Square Attack makes them) is not sent: it counts
    as a query the attack spent (in :attr:`queries`, so it comes out of the budget) and in
    :attr:`nonfinite`, and is answered as a local network answers a NaN input, with NaN scores
    (a label oracle answers ``label``: not adversarial). Neither helps the attack: Square's loss
    of a NaN row is NaN, and ``(new - old) < 0`` is then False, so the image is never accepted.
    """

    def __init__(self, inner: Oracle, label: int) -> None:
        super().__init__(inner)
        self.label = label
        self.nonfinite = 0

    @property
    def queries(self) -> int:
        return self.inner.queries + self.nonfinite

    def _answer(
        self, x: np.ndarray, ask: Callable[[np.ndarray], np.ndarray], empty: np.ndarray
    ) -> np.ndarray:
        batch = np.asarray(x, dtype=np.float32).reshape(-1, *self.input_shape)
        finite = np.isfinite(batch.reshape(len(batch), -1)).all(1)
        if finite.all():
            return np.asarray(ask(batch))
        out = np.repeat(empty[None], len(batch), 0)
        if finite.any():
            out[finite] = ask(batch[finite])
        self.nonfinite += int((~finite).sum())
        return out

    def scores(self, x: np.ndarray) -> np.ndarray:
        nan = np.full(self.num_classes, np.nan, np.float32)
        return self._answer(x, self.inner.scores, nan)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self._answer(x, self.inner.labels, np.array(self.label, np.int64))


class TimeLimit(Exception):
    """The run took longer than the harness allows."""


@dataclass(frozen=True)
class Job:
    attack: str
    implementation: str  # "ours" | "art" | "art-inprocess"
    endpoint: str
    image: int
    label: int
    budget: int
    seed: int
    time_limit: float

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.attack, self.implementation, self.endpoint, self.image)


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeLimit


def run_job(job: Job, url: str, image: np.ndarray) -> dict[str, Any]:
    """Attack ``image`` as ``job`` says; the record without verdicts (the parent judges)."""
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, job.time_limit)
    start = time.perf_counter()
    stop = "converged"
    candidate: np.ndarray | None = None
    started = True
    queries = nonfinite = 0
    try:
        scores = job.attack in SCORE_ATTACKS
        with HttpOracle(
            url, job.endpoint, output="scores" if scores else "label", budget=job.budget
        ) as http:
            oracle = NonFiniteGuard(http, job.label)
            try:
                if job.implementation == "ours":
                    name, params = OURS.get(job.attack, (job.attack, {}))
                    result = get_attack(name)(**params)(
                        oracle, image, job.label, job.budget, seed=job.seed
                    )
                    candidate, stop = result.final_candidate, result.stop_reason
                    # a score attack needs no start; a decision attack's first update is one
                    started = scores or bool(result.updates)
                else:
                    from benchmarks.parity.art_runs import run_art

                    seed_art(job.seed)
                    candidate, stop, started = run_art(
                        job.attack, oracle, image, job.label, job.budget
                    )
            except TimeLimit:
                stop = "time-limit"
            queries, nonfinite = oracle.queries, oracle.nonfinite
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    return make_record(job, image, candidate, queries, stop, started, seconds, nonfinite)


def seed_art(seed: int) -> None:
    """ART draws from NumPy's global generator (and its Square Attack's L2 bumps from Python's
    ``random``): seed both."""
    np.random.seed(seed)
    random.seed(seed)


def make_record(
    job: Job,
    image: np.ndarray,
    candidate: np.ndarray | None,
    queries: int,
    stop: str,
    started: bool,
    seconds: float,
    nonfinite: int,
) -> dict[str, Any]:
    """The record of one run, before the parent adds its verdicts: ``queries`` counts every
    image the attack asked about, ``nonfinite`` those of them that were not finite (not sent)."""
    delta = None if candidate is None else candidate - image
    return {
        "attack": job.attack,
        "implementation": job.implementation,
        "endpoint": job.endpoint,
        "image": job.image,
        "label": job.label,
        "budget": job.budget,
        "queries": queries,
        "stop_reason": stop,
        "started": started,
        "seconds": round(seconds, 3),
        "nonfinite": nonfinite,
        "l2": None if delta is None else float(np.linalg.norm(delta)),
        "linf": None if delta is None else float(np.abs(delta).max()),
        "candidate": None if candidate is None else candidate.astype(np.float32),
    }


__all__ = [
    "ATTACKS",
    "OURS",
    "SCORE_ATTACKS",
    "BudgetExhausted",
    "Job",
    "NonFiniteGuard",
    "TimeLimit",
    "make_record",
    "run_job",
    "seed_art",
]
