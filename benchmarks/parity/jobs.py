"""One parity run: one attack implementation (ours or ART's) on one image of one endpoint.

A run happens in a worker process's main thread, so that a per-run time limit (``SIGALRM``)
can interrupt ART code that loops without querying (GeoDA's query planning once hung here).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

import numpy as np

from attacks_client.attacks import get_attack
from attacks_client.oracles.base import BudgetExhausted
from attacks_client.oracles.http import HttpOracle

# the SND paper's decision attacks ran ART (App. B.1); for the others ART is a second reference
ATTACKS = ("hsja", "boundary", "sign-opt", "geoda", "simba", "simba-dct")
SCORE_ATTACKS = {"simba", "simba-dct"}


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
    queries = 0
    try:
        scores = job.attack in SCORE_ATTACKS
        with HttpOracle(
            url, job.endpoint, output="scores" if scores else "label", budget=job.budget
        ) as oracle:
            try:
                if job.implementation == "ours":
                    result = get_attack(job.attack)()(
                        oracle, image, job.label, job.budget, seed=job.seed
                    )
                    candidate, stop = result.final_candidate, result.stop_reason
                    # a score attack needs no start; a decision attack's first update is one
                    started = scores or bool(result.updates)
                else:
                    from benchmarks.parity.art_runs import run_art

                    np.random.seed(job.seed)  # ART draws from NumPy's global generator
                    candidate, stop, started = run_art(
                        job.attack, oracle, image, job.label, job.budget
                    )
            except TimeLimit:
                stop = "time-limit"
            queries = oracle.queries
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return make_record(job, image, candidate, queries, stop, started, time.perf_counter() - start)


def make_record(
    job: Job,
    image: np.ndarray,
    candidate: np.ndarray | None,
    queries: int,
    stop: str,
    started: bool,
    seconds: float,
) -> dict[str, Any]:
    """The record of one run, before the parent adds its verdicts."""
    l2 = None if candidate is None else float(np.linalg.norm(candidate - image))
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
        "l2": l2,
        "candidate": None if candidate is None else candidate.astype(np.float32),
    }


__all__ = ["ATTACKS", "BudgetExhausted", "Job", "TimeLimit", "make_record", "run_job"]
